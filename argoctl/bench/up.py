"""`argoctl bench up`: time `up` for many peers and prefixes in a throwaway namespace,
then the no-op re-apply, with the number of writes of each (one JSON line each),
against the floor measured in the same run: the same links, addresses, routes and
rules applied with one `ip -batch` in a second namespace (`up_vs_ip_batch`, target
<= 1.5), and the same state dumped with `ip` (`noop_vs_ip_dump`, target <= 2).
`up` is every stage (links, nft, datapath attach, the maps' first contents) with the
datapath's programs compiled beforehand (bcc's compile, reported apart, is paid once
per boot; a restarted agent adopts the pins).

Needs GRE or WireGuard in the kernel (GRE preferred); on a host without them, run it
under the distribution kernel: `python -m argoctl.lab.vm -- .venv/bin/argoctl bench up`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

import click

from argoctl import apply, config, keys, names

NS_PREFIX = "agbench"


def _kernel_has(kind: str, ns: str) -> bool:
    """Try to create one device of `kind` in the namespace (autoloads the module)."""
    extra = ["local", "192.0.2.1", "remote", "192.0.2.2"] if kind == "gre" else []
    ok = subprocess.run(["ip", "-n", ns, "link", "add", "agprobe0", "type", kind, *extra],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "-n", ns, "link", "del", "agprobe0"], check=True)
    return ok


def _config_text(kind: str, peers: int, prefixes: int, keyfile: str) -> str:
    lines = ['[node]', 'name = "bench"', 'address = "192.0.2.1"',
             'tunnel_address = "2001:db8:1::ffff"']
    if kind == "wireguard":
        lines.append(f'private_key_file = "{keyfile}"')
    for i in range(1, peers + 1):
        lines += ['[[peer]]', f'name = "p{i}"', f'id = {i}', f'address = "198.51.100.{i}"',
                  f'tunnel = "{kind}"', f'tunnel_address = "2001:db8:1::{i:x}"']
        if kind == "wireguard":
            pub = keys.encode(keys.public_key(i.to_bytes(32, "little")))
            lines += [f'public_key = "{pub}"', 'port = 51820', f'listen_port = {40000 + i}']
    per = max(1, prefixes // max(peers, 1))
    n = 0
    d = 0
    while n < prefixes:
        count = min(per, prefixes - n)
        pfx = ", ".join(f'"2001:db8:{0x100 + (n + j) // 0x10000:x}:{(n + j) % 0x10000:x}::/64"'
                        for j in range(count))
        d += 1
        lines += ['[[destination]]', f'name = "d{d}"', f'prefixes = [{pfx}]',
                  f'paths = ["direct", "p{(d - 1) % max(peers, 1) + 1}"]']
        n += count
    return "\n".join(lines) + "\n"


UNDERLAY = ["link set lo up", "link add bench0 type veth peer name bench1",
            "addr add 192.0.2.1/32 dev lo", "link set bench0 up", "link set bench1 up",
            "route add 198.51.100.0/24 dev bench0 src 192.0.2.1"]
TARGETS = {"up_vs_ip_batch": 1.5, "noop_vs_ip_dump": 2.0}


def _ns(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "-batch", "-"], input="\n".join(UNDERLAY) + "\n",
                   text=True, check=True)


def ip_batch(want) -> tuple[list[str], list[str]]:
    """The links, addresses, routes and rules of a plan (plan.State) as `ip -batch`
    lines: the floor `up` is measured against (what iproute2 alone takes to write
    the same objects). Two batches: everything but the IPv6 rules, then those under
    `ip -6` (a rule line has no family of its own: iproute2 6.1 reads
    `from ::/0` as "all", an IPv4 rule). WireGuard keys need `wg`, so GRE only."""
    out, rules6 = [], []
    for l in want.links:
        if l.kind not in ("gre", "ip6gre"):
            raise click.ClickException("the ip -batch reference needs GRE tunnels")
        key = f" key {l.gre_key}" if l.gre_key is not None else ""
        out.append(f"link add {l.name} mtu {l.mtu} type {l.kind} local {l.local} "
                   f"remote {l.remote} ttl {l.ttl or 0}{key}")
        out.append(f"link set {l.name} alias {l.alias} up")
    for a in want.addresses:
        peer = f" peer {a.peer}" if a.peer else ""
        out.append(f"addr add {a.local}{peer} dev {a.dev}")
    for r in want.routes:
        dst = r.dst if r.dst != "default" else ("0.0.0.0/0" if r.family == 4 else "::/0")
        if r.type != "unicast":          # a path table's drop route (kind, metric, no device)
            out.append(f"route add {r.type} {dst} table {r.table} metric {r.metric} "
                       f"proto {names.RTPROT_ARGOCTL}")
            continue
        out.append(f"route add {dst} dev {r.dev} table {r.table} proto {names.RTPROT_ARGOCTL}")
    for r in want.rules:
        (out if r.family == 4 else rules6).append(
            f"rule add priority {r.priority} not fwmark 0x0/{r.mask:#x} blackhole"
            if r.action == "blackhole" else
            f"rule add priority {r.priority} fwmark {r.mark:#x}/{r.mask:#x} lookup {r.table}")
    return out, rules6


def _timed(argv: list[str], text: str) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, input=text, text=True, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def ip_dump_seconds(ns: str) -> float:
    """Dumping the state a no-op `up` reads (links with details, addresses, routes
    of all tables and rules, both families) with ip: two processes (-6 is global)."""
    return (_timed(["ip", "-n", ns, "-d", "-j", "-batch", "-"],
                   "link show\naddr show\nroute show table all\nrule show\n")
            + _timed(["ip", "-n", ns, "-6", "-j", "-batch", "-"],
                     "route show table all\nrule show\n"))


def library_seconds(ops, msgs) -> tuple[float, int, float]:
    """What pyroute2 alone takes, in this run, (1) to build and encode the requests
    `up` sends for the links, addresses, routes and rules (`ops`: the up's plan.Ops;
    the devices' indexes are made up: the bytes' cost is the same), and (2) to decode
    the messages of the dumps the no-op read (`msgs`: its Snapshot's). The work of
    `ip -batch` and the `ip` dumps: the part of each ratio that is the library's,
    before any of argoctl's own Python and any of the kernel's work.
    Returns (encode seconds, requests, decode seconds)."""
    from argoctl import netlink, plan, rtbatch
    index: dict = {}

    def ifindex(name):
        return index.setdefault(name, len(index) + 1)
    n = 0
    t0 = time.monotonic()
    for op in ops:
        o = op.obj
        if isinstance(o, plan.Link) and op.action == "add":
            built = [rtbatch.link_add(o.name, o.kind, o.mtu, netlink.link_data(o)),
                     rtbatch.link_up(ifindex(o.name), o.alias)]
        elif isinstance(o, (plan.Address, plan.Route, plan.Rule)):
            built = [rtbatch.request(op, ifindex)]
        else:
            continue
        for m in built:
            m.encode()
        n += len(built)
    encode_s = time.monotonic() - t0
    t0 = time.monotonic()
    for m in msgs:
        rtbatch.decode(type(m), m.data)
    return encode_s, n, time.monotonic() - t0


def run(peers: int, prefixes: int, kind: str | None) -> list[dict]:
    from pyroute2 import IPRoute
    from argoctl import datapath, home, netlink, plan
    ns, ref = f"{NS_PREFIX}{os.getpid()}", f"{NS_PREFIX}{os.getpid()}r"
    _ns(ns)
    try:
        _ns(ref)
        kinds = [kind] if kind else ["gre", "wireguard"]
        usable = [k for k in kinds if _kernel_has(k, ns)]
        if not usable:
            raise click.ClickException(
                f"this kernel has no {' or '.join(kinds)}: run the bench under the "
                "distribution kernel (python -m argoctl.lab.vm -- .venv/bin/argoctl bench up)")
        kind = usable[0]
        with tempfile.TemporaryDirectory(prefix="argoctl-bench-") as tmp:
            keyfile = os.path.join(tmp, "bench.key")
            keys.write_key_pair(keyfile)
            path = os.path.join(tmp, "bench.toml")
            with open(path, "w") as f:
                f.write(_config_text(kind, peers, prefixes, keyfile))
            t0 = time.monotonic()
            cfg = config.load(path)
            load_s = time.monotonic() - t0
            run_dir = os.path.join(tmp, "run")
            # The compile (bcc) is paid once per host and boot, and a restarted
            # agent adopts the pins: measured apart, not in `up`.
            t0 = time.monotonic()
            with netlink.netns(ns):
                datapath.ensure_loaded(home.pin_dir(ns))
            compile_s = time.monotonic() - t0
            base = {"bench": "up", "tunnel": kind, "peers": peers,
                    "prefixes": sum(len(d.prefixes) for d in cfg.destinations)}
            out, secs, ctxs = [], {}, {}
            for phase in ("up", "noop"):
                t0 = time.monotonic()
                ctx = ctxs[phase] = apply.up(cfg, ns=ns, run_dir=run_dir, cgroup=None)
                secs[phase] = time.monotonic() - t0
                out.append({**base, "phase": phase, "seconds": round(secs[phase], 3),
                            "config_load_seconds": round(load_s, 3), "ops": len(ctx.ops),
                            "writes": ctx.result.writes,
                            "netlink_writes": ctx.result.netlink_writes,
                            "nft_writes": ctx.result.nft_writes,
                            "sysctl_writes": ctx.result.sysctl_writes,
                            "steps": ctx.steps, "maps": ctx.extra.get("maps", {})})
            with netlink.netns(ns), IPRoute() as ipr:
                want = plan.desired(cfg, netlink.KernelEnv(ipr))
            lines, rules6 = ip_batch(want)
            batch_s = (_timed(["ip", "-n", ref, "-batch", "-"], "\n".join(lines) + "\n")
                       + _timed(["ip", "-n", ref, "-6", "-batch", "-"], "\n".join(rules6) + "\n"))
            dump_s = min(ip_dump_seconds(ns) for _ in range(3))
            msgs = ctxs["noop"].snap.messages()
            encode_s, requests, decode_s = library_seconds(ctxs["up"].ops, msgs)
            out.append({**base, "phase": "reference", "ip_batch_seconds": round(batch_s, 3),
                        "ip_batch_lines": len(lines) + len(rules6),
                        "ip_dump_seconds": round(dump_s, 4),
                        "pyroute2_requests_seconds": round(encode_s, 3),
                        "pyroute2_requests": requests,
                        "pyroute2_dumps_seconds": round(decode_s, 3),
                        "pyroute2_dump_messages": len(msgs),
                        "datapath_compile_seconds": round(compile_s, 3)})
            ratios = {"up_vs_ip_batch": round(secs["up"] / batch_s, 2),
                      "noop_vs_ip_dump": round(secs["noop"] / dump_s, 2)}
            # the ratios pyroute2 alone would give, were argoctl's Python and the
            # kernel's work free: a target below them cannot be met with the library
            floor = {"up_vs_ip_batch": round(encode_s / batch_s, 2),
                     "noop_vs_ip_dump": round(decode_s / dump_s, 2)}
            out.append({**base, "phase": "ratios", **ratios, "targets": TARGETS,
                        "met": {k: ratios[k] <= TARGETS[k] for k in TARGETS},
                        "pyroute2_floor": floor})
            t0 = time.monotonic()
            ctx = apply.down(ns=ns, run_dir=run_dir, cgroup=None)
            out.append({**base, "phase": "down", "seconds": round(time.monotonic() - t0, 3),
                        "ops": len(ctx.ops), "writes": ctx.result.writes})
            return out
    finally:
        pins = home.pin_dir(ns)
        if os.path.isdir(pins):        # (a failed run: `down` did not get to them)
            for entry in os.listdir(pins):
                os.unlink(os.path.join(pins, entry))
            os.rmdir(pins)
        subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["ip", "netns", "del", ref], check=False)


@click.command("up")
@click.option("--peers", type=click.IntRange(1, 254), default=100, show_default=True)
@click.option("--prefixes", type=click.IntRange(0), default=10000, show_default=True)
@click.option("--tunnel", type=click.Choice(["gre", "wireguard"]),
              help="tunnel kind (default: GRE if the kernel has it, else WireGuard)")
@click.option("--json", "as_json", is_flag=True, help="JSON lines (the default output anyway)")
def bench_up(peers: int, prefixes: int, tunnel: str | None, as_json: bool) -> None:
    """Time `up` (and the no-op re-apply) for PEERS tunnels and PREFIXES destination prefixes."""
    from argoctl.bench.report import emit
    for record in run(peers, prefixes, tunnel):
        emit(record)
