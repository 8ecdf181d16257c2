"""`argoctl status`: what argoctl owns on this host, as data and as rich tables.

Works without a config (paths are then derived from our rules and tables); with one,
paths are named and missing pieces show up as such.
"""

from __future__ import annotations

import time
from typing import Optional

from argoctl import names, netlink
from argoctl.config import DIRECT, Config, Routing


def collect(ns: Optional[str] = None, config: Optional[Config] = None,
            run_dir: Optional[str] = None) -> dict:
    from pyroute2 import IPRoute, WireGuard
    from argoctl import nft as nftmod
    from argoctl.apply import default_run_dir
    from argoctl import runfiles
    problems: list[str] = []          # damaged run files, and what was done instead
    routing = config.routing if config else runfiles.load_routing_or_default(
        netlink.state_dir(ns, run_dir or default_run_dir()), problems)
    with netlink.netns(ns):
        with IPRoute() as ipr:
            wg_socks = []

            def wg():
                if not wg_socks:
                    wg_socks.append(WireGuard())
                return wg_socks[0]
            try:
                state = netlink.read_owned(ipr, routing, wg=wg, nft=nftmod.Client())
                tunnels = [_tunnel(ipr, wg, link) for link in state.links]
                from argoctl import foreign
                foreign_rules = foreign.in_our_range(ipr, routing, state)
                conflicts = foreign.mark_conflicts(ipr, routing, state)
            finally:
                for s in wg_socks:
                    s.close()
    return {"tunnels": tunnels, "paths": _paths(state, routing, config),
            "foreign_rules": foreign_rules, "mark_conflicts": conflicts,
            "routes": [{"family": r.family, "table": r.table, "dst": r.dst, "dev": r.dev,
                        "type": r.type} for r in state.routes],
            "nft": ({"table": f"{names.NFT_FAMILY} {names.NFT_TABLE}",
                     "digest": state.nft[0].digest, "rules": dict(state.nft[0].chains)}
                    if state.nft else None),
            "problems": problems}


def _tunnel(ipr, wg, link) -> dict:
    msg = ipr.get_links(ifname=link.name)[0]
    stats = msg.get_attr("IFLA_STATS64") or {}
    row = {"name": link.name, "kind": link.kind, "mtu": link.mtu,
           "state": msg.get_attr("IFLA_OPERSTATE"),
           "endpoint": link.remote if link.kind != "wireguard" else link.endpoint,
           "rx_bytes": stats.get("rx_bytes", 0), "tx_bytes": stats.get("tx_bytes", 0),
           "rx_packets": stats.get("rx_packets", 0), "tx_packets": stats.get("tx_packets", 0),
           "handshake_age_s": None}
    if link.kind == "wireguard":
        peers = netlink.wg_info(wg(), link.name)["peers"]
        if peers and peers[0]["last_handshake"]:
            row["handshake_age_s"] = round(time.time() - peers[0]["last_handshake"], 1)
    return row


def _paths(state, routing: Routing, config: Optional[Config]) -> list[dict]:
    rules = {(r.family, r.priority): r for r in state.rules}
    routes = {(r.family, r.table): r for r in state.routes
              if r.dst == "default" and r.type == "unicast"}
    if config:
        wanted = [(DIRECT, names.DIRECT_PATH_ID)] + [(p.name, p.id) for p in config.peers]
    else:
        ids = sorted({r.priority - routing.rule_priority_base for r in state.rules
                      if r.action == "table"})
        wanted = [(DIRECT if i == names.DIRECT_PATH_ID else
                   next((r.dev for (f, t), r in routes.items() if t == routing.table(i)), "?"),
                   i) for i in ids]
    out = []
    for name, pid in wanted:
        table = routing.table(pid)
        dev = None if pid == names.DIRECT_PATH_ID else (routes.get((4, table)) or
                                                        routes.get((6, table)))
        out.append({"path": name, "id": pid, "mark": f"{routing.mark(pid):#x}",
                    "table": "main" if pid == names.DIRECT_PATH_ID else table,
                    "priority": routing.priority(pid),
                    "rule4": (4, routing.priority(pid)) in rules,
                    "rule6": (6, routing.priority(pid)) in rules,
                    "dev": dev.dev if dev else None})
    return out


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def render(data: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    console = console or Console()
    ok = lambda v: "[green]yes[/]" if v else "[red]missing[/]"  # noqa: E731
    t = Table(title="tunnels")
    for col in ("device", "kind", "endpoint", "mtu", "state", "rx", "tx", "handshake"):
        t.add_column(col)
    for r in data["tunnels"]:
        hs = "-" if r["handshake_age_s"] is None else f"{r['handshake_age_s']:.0f} s ago"
        if r["kind"] == "wireguard" and r["handshake_age_s"] is None:
            hs = "[yellow]never[/]"
        t.add_row(r["name"], r["kind"], str(r["endpoint"]), str(r["mtu"]), str(r["state"]),
                  f"{_bytes(r['rx_bytes'])} / {r['rx_packets']} pkts",
                  f"{_bytes(r['tx_bytes'])} / {r['tx_packets']} pkts", hs)
    console.print(t)
    p = Table(title="paths")
    for col in ("path", "id", "fwmark", "table", "priority", "rule v4", "rule v6", "device"):
        p.add_column(col)
    for r in data["paths"]:
        p.add_row(r["path"], str(r["id"]), r["mark"], str(r["table"]), str(r["priority"]),
                  ok(r["rule4"]), ok(r["rule6"]), r["dev"] or "-")
    console.print(p)
    rt = Table(title=f"routes (protocol {names.RTPROT_ARGOCTL})")
    for col in ("family", "table", "destination", "device"):
        rt.add_column(col)
    for r in data["routes"]:
        rt.add_row(f"IPv{r['family']}", str(r["table"]), r["dst"],
                   r["dev"] if r.get("type", "unicast") == "unicast" else r["type"])
    console.print(rt)
    if data["nft"]:
        rules = ", ".join(f"{c} {n}" for c, n in data["nft"]["rules"].items())
        console.print(f"nft table {data['nft']['table']}: {rules} (digest {data['nft']['digest']})")
    else:
        console.print("nft table: [yellow]absent[/]")
    for text in data.get("foreign_rules", []):
        console.print(f"[yellow]foreign rule in argoctl's priority range:[/] {text}")
    for text in data.get("mark_conflicts", []):
        console.print(f"[red]foreign rule on argoctl's fwmark bits:[/] {text}")


def status_table(st: dict, path_name: dict[int, str]):
    """A rich table: each destination's path set with its counters."""
    from rich.table import Table
    t = Table(title="datapath: destinations")
    for col in ("id", "prefixes", "paths (weight, state)", "packets", "bytes"):
        t.add_column(col)
    for dest_id, d in sorted(st["destinations"].items()):
        paths = ", ".join(f"{path_name.get(p['path_id'], p['path_id'])} {p['weight']}"
                          f"{'' if p['up'] else ' DOWN'}" for p in d["paths"])
        t.add_row(str(dest_id), " ".join(d["prefixes"]), paths,
                  str(d["counters"]["packets"]), str(d["counters"]["bytes"]))
    p = Table(title="datapath: paths (protective reroute %s)"
                    % ("on" if st.get("reroute") else "off"))
    for col in ("path", "packets", "bytes", "SYNs", "SYN-ACKs", "handshake RTT", "sockets",
                "rerouted away"):
        p.add_column(col)
    for pid, c in sorted(st["paths"].items()):
        rtt = f"{c['rtt_sum_ns'] / c['rtt_count'] / 1e6:.1f} ms" if c["rtt_count"] else "-"
        p.add_row(str(path_name.get(pid, pid)), str(c["packets"]), str(c["bytes"]),
                  str(c["syns"]), str(c["synacks"]), rtt, str(c["sockets"]),
                  str(c["reroutes"]))
    return t, p


def path_names(config: Config) -> dict[int, str]:
    """path id -> name, for rendering status."""
    out = {names.DIRECT_PATH_ID: DIRECT}
    out.update({p.id: p.name for p in config.peers})
    return out
