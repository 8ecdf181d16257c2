"""`argoctl bench probes`: CPU cost of the probers at scale, in the namespace lab.

Builds the standard lab, gives edge one fwmark rule per path (direct, relay1,
relay2, then relay1 again for more paths), runs `argoctl responder` in origin
(its CPU is not counted) and probes N destinations x P paths from edge at the
policy interval. Reports this process's CPU over the measured window as a
percentage of one core."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import resource
import subprocess
import sys
import tempfile
import time

import click

from argoctl.config import Probe, Routing

TARGET = "203.0.113.10"
PORT = 7447
CLOSED_PORT = 9


def _lab_with_paths(prefix: str, paths: int, routing: Routing):
    from argoctl.lab.topo import Topology

    t = Topology.default(prefix)
    t.start()
    relays = ["relay1", "relay2"]
    t.fwmark_paths(routing, {pid: relays[(pid - 1) % len(relays)] for pid in range(1, paths)})
    return t


async def _measure(key, kind: str, dests: int, paths: int, routing: Routing,
                   interval_ms: float, warmup: float, seconds: float) -> dict:
    from argoctl.probe import ProbeScheduler

    results = {"ok": 0, "lost": 0}

    def on_result(dest, path, seq, sent, rtt, now):
        results["ok" if rtt is not None else "lost"] += 1

    sched = ProbeScheduler(on_result, key=key, interval_ms=interval_ms, jitter=0.1,
                           timeout_ms=1000)
    # tcp: a closed port, so each probe is SYN -> RST (no connection to tear down)
    port = {"udp": PORT, "icmp": None, "tcp": CLOSED_PORT}[kind]
    spec = Probe(kind, ipaddress.ip_address(TARGET), port)
    for d in range(dests):
        for p in range(paths):
            sched.add(f"d{d}", f"p{p}", routing.mark(p), spec)
    sched.start()
    try:
        await asyncio.sleep(warmup)
        before = dict(results)
        ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await asyncio.sleep(seconds)
        ru1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        after = dict(results)
    finally:
        sched.stop()
    wall = t1 - t0
    user, system = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
    return {
        # system time includes the veth/netns delivery the kernel does in our
        # context (origin's receive path runs in the sender's softirq here)
        "cpu_percent_of_core": round(100 * (user + system) / wall, 2),
        "user_percent": round(100 * user / wall, 2),
        "system_percent": round(100 * system / wall, 2),
        "replies_per_s": round((after["ok"] - before["ok"]) / wall, 1),
        "lost_per_s": round((after["lost"] - before["lost"]) / wall, 1),
        "rejects": {p: dict(c) for p, c in sched.rejects().items() if c},
    }


@click.command("probes")
@click.option("--destinations", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--paths", type=click.IntRange(min=1, max=8), default=4, show_default=True)
@click.option("--interval", "interval_ms", type=click.FloatRange(min=10), default=1000,
              show_default=True, metavar="MS")
@click.option("--seconds", type=click.FloatRange(min=1), default=10, show_default=True)
@click.option("--kind", type=click.Choice(["udp", "icmp", "tcp"]), default="udp",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="(always JSON lines; for symmetry)")
def probes_bench(destinations: int, paths: int, interval_ms: float, seconds: float,
                 kind: str, as_json: bool) -> None:
    """Prober CPU for DESTINATIONS x PATHS probes of one kind (needs root: namespaces)."""
    from argoctl import mac
    from argoctl.bench.report import emit  # bench imports this module: import late

    routing = Routing()
    t = None
    with tempfile.TemporaryDirectory() as tmp:
        key_file = os.path.join(tmp, "probe.key")
        mac.write_key(key_file)
        key = mac.read_key(key_file)
        try:
            t = _lab_with_paths(f"agb{os.getpid()}", paths, routing)
            rate = str(destinations * paths * 2000 / interval_ms)
            t["origin"].popen([sys.executable, "-m", "argoctl", "responder", "--listen",
                               f"0.0.0.0:{PORT}", "--key-file", key_file, "--rate", rate,
                               "--global-rate", rate], stderr=subprocess.DEVNULL)
            time.sleep(1.5)  # responder start-up
            with t["edge"].inside():
                record = asyncio.run(_measure(key, kind, destinations, paths, routing,
                                              interval_ms, warmup=2.0, seconds=seconds))
        finally:
            if t is not None:
                t.stop()
    emit({"bench": "probe_cpu", "kind": kind, "destinations": destinations,
          "paths": paths, "interval_ms": interval_ms, "seconds": seconds,
          "probes_per_s": round(destinations * paths * 1000 / interval_ms, 1), **record})
