"""`argoctl bench fleet` (the default, `--lab`): fleet mode off and on in the
12-host fleet lab (argoctl/lab/fleet.py), with real packets.

One lab, one run: 9 edges (each steering its client's UDP stream and TCP
connections to the origin's host, which serves 4 destinations, as the
simulation's fleet: its TCP connections take them in turn) and 3 relays, one real daemon each, 1 s probes,
stand-in relay paths, nats-server in the lab's `bus` namespace. Probes are
counted on the wire by nftables counters the bench adds in the lab's
namespaces (its own table, gone with the namespaces):

  per origin:  UDP packets to the responder's port arriving at the origin's host
               (input), per destination it serves (each its own address)
  per host:    probe packets each host sends (output): UDP to the responder's
               port (end to end) and ICMP echo requests (fleet mode's tunnel legs)

Phases (the lab is built once: the datapaths are compiled once, and restarting
the daemons with other configs adopts them, in about a second):

  off:      every daemon restarted without [fleet] (no bus: every host probes
            every path itself), `warmup_off` s, then `seconds` counted; then
            each edge's every path is pinged (ICMP, the path's fwmark, PINGS
            each): the RTT table regret is priced on;
  on:       every daemon restarted with [fleet] (the product's defaults: 15 s
            TTL, k = 2; publish every 500 ms as in the lab); once every daemon
            is in fleet mode, `warmup` s (paces settle), then `seconds` counted;
  orpheus:  (fleet on) the origin reachable only through the last relay (every
            edge's and every other relay's link to it blackholed, as in
            tests/netns/test_fleet_lab.py): seconds until every edge's client
            traffic arrives at the origin through that relay.

Latency: the host kernel has no netem, so every lab path is a sub-millisecond
veth hop (a relay path one or two hops more than direct). regret_pct prices
each edge's choice with fleet mode on and off on one table, measured once by
the bench (median of PINGS ICMP echoes per path): it shows whether fleet mode
picks a worse path, not how much latency it saves on a real network (`--sim`
models that).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import time
from typing import Optional

from argoctl.lab import configs as labconfig

TABLE = "argoctl_bench_probes"


# -- counting probes on the wire ----------------------------------------------------

def counter_rules(hook: str, port: int) -> str:
    """An nft table counting probe packets at `hook` (output: what this host sends;
    input: what arrives here): `e2e` UDP to the responder's `port`, `legs` ICMP
    echo requests (tunnel legs)."""
    return (f"table inet {TABLE} {{\n"
            "  counter e2e { }\n  counter legs { }\n"
            f"  chain {hook} {{ type filter hook {hook} priority 0; policy accept;\n"
            f"    udp dport {port} counter name \"e2e\"\n"
            "    icmp type echo-request counter name \"legs\"\n  }\n}\n")


def parse_counters(text: str) -> dict[str, int]:
    """`nft -j list counters table inet TABLE` -> {counter name: packets}."""
    out = {}
    for item in json.loads(text).get("nftables", []):
        c = item.get("counter")
        if c is not None and c.get("table") == TABLE:
            out[c["name"]] = int(c.get("packets", 0))
    return out


class ProbeCounters:
    """nft counters in each of `hosts` (output) and in `origin` (input)."""

    def __init__(self, hosts: dict, origin, port: int = labconfig.RESPONDER_PORT):
        self.hosts, self.origin = hosts, origin
        for h in hosts.values():
            h.run(["nft", "-f", "-"], check=True, input=counter_rules("output", port))
        origin.run(["nft", "-f", "-"], check=True, input=counter_rules("input", port))

    @staticmethod
    def _read(host) -> dict[str, int]:
        out = host.run(["nft", "-j", "list", "counters", "table", "inet", TABLE], check=True)
        return parse_counters(out.stdout)

    def read(self) -> tuple[dict[str, dict[str, int]], int]:
        """({host: {"e2e": n, "legs": n}}, probes arrived at the origin)."""
        return ({name: self._read(h) for name, h in self.hosts.items()},
                self._read(self.origin).get("e2e", 0))


def rates(before, after, seconds: float, edges: list[str], origins: int = 1) -> dict:
    """Probes per second from two ProbeCounters.read()s; per origin: what arrived
    at the origin's host over the `origins` destinations it serves."""
    (h0, o0), (h1, o1) = before, after
    per_host = {h: sum(h1[h].values()) - sum(h0[h].values()) for h in h1}
    legs = {h: h1[h].get("legs", 0) - h0[h].get("legs", 0) for h in h1}
    relays = [h for h in per_host if h not in edges]

    def mean(hs, d=per_host):
        return round(statistics.mean(d[h] for h in hs) / seconds, 2) if hs else None
    return {"per_origin": round((o1 - o0) / seconds / origins, 2), "per_host": mean(list(per_host)),
            "per_edge": mean(edges), "per_relay": mean(relays),
            "tunnel_legs_per_host": mean(list(legs), legs),
            "sent_to_origin": round(sum(per_host[h] - legs[h] for h in per_host) / seconds, 2)}


# -- the phases ----------------------------------------------------------------------

PINGS = 20                 # ICMP echoes per path for the RTT table


def parse_ping(text: str) -> Optional[float]:
    """The median `time=X ms` of ping's output (None: no reply)."""
    times = [float(m) for m in re.findall(r"time=([0-9.]+) ms", text)]
    return round(statistics.median(times), 4) if times else None


def path_rtts(lab, dest: str = "origin", count: int = PINGS) -> dict[str, dict[str, Optional[float]]]:
    """Each edge's every path to `dest`: median RTT (ms) of `count` ICMP echoes to
    its probe target sent with the path's fwmark (the route its probes take)."""
    out: dict[str, dict[str, Optional[float]]] = {}
    for e in lab.edge_names:
        cfg = lab.configs[e]
        d = next(x for x in cfg.destinations if x.name == dest)
        out[e] = {}
        for p in d.paths:
            mark = cfg.routing.mark(cfg.path_id(p))
            r = lab.topo[e].run(["ping", "-n", "-c", str(count), "-i", "0.01", "-W", "1",
                                 "-m", str(mark), str(d.probe.target)], timeout=30)
            out[e][p] = parse_ping(r.stdout)
    return out


def _srtts(lab, dest: str = "origin") -> dict[str, Optional[float]]:
    """Each edge's smoothed RTT (ms) of its choice, as its engine has it."""
    out = {}
    for e in lab.edge_names:
        dec = lab.daemons[e].engine.last(dest)
        s = None if dec is None else dec.scores.get(dec.choice)
        out[e] = None if s is None else s.snapshot.srtt_ms
    return out


def _window(lab, counters: ProbeCounters, warmup: float, seconds: float) -> dict:
    time.sleep(warmup)
    before, t0 = counters.read(), time.monotonic()
    time.sleep(seconds)
    after, took = counters.read(), time.monotonic() - t0
    return {**rates(before, after, took, lab.edge_names, lab.origins), "counted_s": round(took, 1),
            "choices": lab.choices(), "srtts": _srtts(lab)}


def orpheus(lab, timeout: float = 60) -> dict:
    """Orpheus as the lab measures it (FleetLab.orpheus), in the bench's units:
    seconds after the blackholes until the last edge's client reached the origin
    through the one relay left, by a new TCP connection and by its UDP stream."""
    o = lab.orpheus(timeout)

    def last(times):
        return round(max(times.values()), 2) if o["ok"] and times else None

    def median(times):
        return round(statistics.median(times.values()), 2) if times else None
    return {"s": last(o["tcp"] or o["udp"]), "median_s": median(o["tcp"] or o["udp"]),
            "udp_s": last(o["udp"]), "udp_median_s": median(o["udp"]),
            "edges_s": {e: round(s, 2) for e, s in sorted((o["tcp"] or o["udp"]).items())},
            "relay": o["relay"], "choices_before": count_choices(o["before"])}


def _median(values) -> Optional[float]:
    vs = [v for v in values if v is not None]
    return round(statistics.median(vs), 4) if vs else None


def regret(table: dict, off: dict, on: dict) -> dict:
    """Median RTT of the edges' choices with fleet mode on and off, both priced
    on one RTT table ({edge: {path: ms}})."""
    med_off = _median(table[e].get(c) for e, c in off["choices"].items())
    med_on = _median(table[e].get(c) for e, c in on["choices"].items())
    pct = None
    if med_off and med_on is not None:
        pct = round(100 * (med_on - med_off) / med_off, 2)
    return {"median_rtt_ms_off": med_off, "median_rtt_ms_on": med_on, "regret_pct": pct}


def run(edges: int = 9, relays: int = 3, seconds: float = 20.0, warmup: float = 15.0,
        warmup_off: float = 5.0, tcp_rate: float = 4.0, alternatives: int = 2,
        ttl_s: float = 15.0, origins: int = 4, say=lambda m: None) -> dict:
    from argoctl.lab.fleet import FleetLab, POLICY, FLEET
    fleet = {**FLEET, "ttl_s": ttl_s, "alternatives": alternatives}
    out = {"lab": "fleet", "hosts": edges + relays, "edges": edges, "relays": relays,
           "destinations": origins, "paths_per_edge": relays + 1,
           "probe_interval_ms": POLICY["probe_interval_ms"], "fleet": fleet,
           "probes": "real: packets counted by nftables counters in the lab's namespaces "
                     "(per origin: arriving at the responder; per host: sent, tunnel legs "
                     "included)",
           "traffic": f"per edge: its client's UDP stream to the first destination and "
                      f"{tcp_rate:g} TCP connections/s to the {origins} in turn",
           "regret": f"median RTT of the edges' choices on and off, both priced on one table: "
                     f"the median of {PINGS} pings per edge and path (its fwmark), taken "
                     "after the off phase; no netem on this kernel: every lab path is a "
                     "sub-ms veth hop",
           "counted_s": seconds, "warmup_s": warmup, "warmup_off_s": warmup_off}
    timings = {}
    t_start = time.monotonic()

    def mark(phase):
        timings[phase] = round(time.monotonic() - t_start, 1)
    prefix = f"agb{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="argoctl-bench-fleetlab-") as directory:
        lab = FleetLab(prefix, directory, edges, relays, fleet=fleet, tcp_rate=tcp_rate,
                       origins=origins)
        try:
            say("starting the fleet lab (one datapath compile per host)")
            lab.start()
            timings.update(lab.timings)
            t = lab.topo
            counters = ProbeCounters({h: t[h] for h in lab.daemons}, t["origin"])
            say("fleet mode off: every daemon restarted without [fleet]; counting")
            lab.restart_daemons(fleet=False)
            mark("restarted_off")
            off = _window(lab, counters, warmup_off, seconds)
            off["fleet_hosts"] = sum(d.fleet is not None for d in lab.daemons.values())
            mark("off")
            say("pinging every edge's every path")
            table = path_rtts(lab)
            mark("pings")
            say("fleet mode on: every daemon restarted with [fleet]; counting")
            lab.restart_daemons(fleet=True)
            mark("restarted_on")
            ok = lab.wait_for(lambda: all(d.fleet.mode == "fleet"
                                          for d in lab.daemons.values()), 60)
            if not ok:
                raise RuntimeError("fleet mode not reached: " + ", ".join(
                    f"{h}: {d.fleet.mode}" for h, d in lab.daemons.items()))
            mark("fleet_mode")
            on = _window(lab, counters, warmup, seconds)
            agents = [d.fleet for d in lab.daemons.values()]
            on["streams"] = pace_counts(agents)
            on["fleet_mode_hosts"] = sum(a.mode == "fleet" for a in agents)
            on["polls"] = sum(a.polls for a in agents)
            mark("on")
            say("orpheus: the origin reachable only through the last relay")
            orph = orpheus(lab)
            mark("orpheus")
            answered = [ok is not None for c in lab.connectors.values() for _, ok in c.attempts]
        finally:
            lab.stop()
    for mode, w in (("off", off), ("on", on)):
        out[f"probes_per_origin_s_{mode}"] = w["per_origin"]
        out[f"probes_per_host_s_{mode}"] = w["per_host"]
        for k in ("per_edge", "per_relay", "tunnel_legs_per_host", "sent_to_origin"):
            out[f"probes_{k}_s_{mode}"] = w[k]
        out[f"choices_{mode}"] = count_choices(w["choices"])
        out[f"median_srtt_ms_{mode}"] = _median(w["srtts"].values())
    out.update(regret(table, off, on))
    out["path_rtt_ms"] = {p: _median(table[e].get(p) for e in table)
                          for p in next(iter(table.values()))}
    out["reduction_per_origin"] = _ratio(out["probes_per_origin_s_off"],
                                         out["probes_per_origin_s_on"])
    out["reduction_per_host"] = _ratio(out["probes_per_host_s_off"],
                                       out["probes_per_host_s_on"])
    out["reduction_per_edge"] = _ratio(out["probes_per_edge_s_off"],
                                       out["probes_per_edge_s_on"])
    out["streams_on"] = on["streams"]
    out["fleet_mode_hosts_on"] = on["fleet_mode_hosts"]
    out["polls_on"] = on["polls"]       # streams put back to the full rate (since the restart)
    out["fleet_hosts_off"] = off["fleet_hosts"]
    out["orpheus_reach_s"] = orph["s"]
    out["orpheus_median_s"] = orph["median_s"]
    out["orpheus_udp_s"] = orph["udp_s"]
    out["orpheus_udp_median_s"] = orph["udp_median_s"]
    out["orpheus_edges_s"] = orph["edges_s"]
    out["orpheus_relay"] = orph["relay"]
    out["orpheus_choices_before"] = orph["choices_before"]
    out["tcp_answered_pct"] = round(100 * sum(answered) / len(answered), 2) if answered else None
    out["timings_s"] = {**timings, "total": round(time.monotonic() - t_start, 1)}
    return out


def pace_counts(agents) -> dict:
    """How many end-to-end streams (and tunnel legs) run at which pace, fleet-wide."""
    out: dict = {}
    for a in agents:
        for pair in a.probed:
            k = f"e2e_pace_{a.pace_of(*pair)}"
            out[k] = out.get(k, 0) + 1
        for peer in a.peers:
            k = f"tunnel_pace_{a.peer_paces.get(peer, 1)}"
            out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def count_choices(choices: dict) -> dict[str, int]:
    """{path: how many edges chose it}."""
    out: dict[str, int] = {}
    for c in choices.values():
        out[str(c)] = out.get(str(c), 0) + 1
    return dict(sorted(out.items()))


def _ratio(a, b) -> Optional[float]:
    return round(a / b, 2) if a is not None and b else None
