"""`argoctl bench failover`: time from blackholing the active path to the first
packet over another path, in the loop lab (argoctl/lab/loop.py)."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Optional
import click

from argoctl.bench.report import emit
from argoctl.lab.loop import LoopLab, PATH_LINKS, Stream
from argoctl.lab.vm import kernel_label

# -- bench failover ------------------------------------------------------------------

LINK_PATHS = {link: path for path, link in PATH_LINKS.items()}


def _steady_link(lab: LoopLab, first_idx: int, window: float) -> Optional[str]:
    """The one link the stream arrived on during the last `window` seconds while no
    path was in doubt, else None."""
    if lab.daemon._doubt:
        return None
    since = time.monotonic() - window
    links = {ifname for t, _, ifname in lab.sink.got[first_idx:] if t >= since}
    return links.pop() if len(links) == 1 else None


def failover_once(lab: LoopLab, pps: float, settle: float, timeout: float) -> dict:
    """Under a constant stream, blackhole the path it takes (once steady); time to
    the first datagram over another path, the first decision, datagrams lost."""
    t = lab.topo
    first_idx = len(lab.sink.got)          # the sink outlives runs; seqs restart per stream
    stream = Stream(t["client"], pps=pps)
    try:
        lab.wait_for(lambda: len(lab.sink.got) - first_idx > pps * 0.5, 10)
        steady = lab.wait_for(lambda: _steady_link(lab, first_idx, settle) is not None, 30, 0.1)
        link = _steady_link(lab, first_idx, settle) or lab.sink.got[-1][2]
        active = LINK_PATHS[link]
        others = set(PATH_LINKS.values()) - {link}
        far = "origin" if active == "direct" else active
        sent_before = len(stream.sent)
        t0 = time.monotonic()
        t.link("edge", far).impair(blackhole=True, direction="a->b")
        ok = lab.wait_for(lambda: lab.sink.first_on(others, t0) is not None, timeout, 0.005)
        first = lab.sink.first_on(others, t0)
        time.sleep(0.5)
        stream.stop()
        time.sleep(0.3)
        sent = len(stream.sent)
        seqs = {s for _, s, _ in lab.sink.got[first_idx:]}
        window = range(sent_before, sent)
        lost = sum(1 for s in window if s not in seqs)
        decision = next((r for r in lab.daemon.history if r.at >= t0), None)
        t.link("edge", far).clear()
        return {"active": active, "steady_before": steady,
                "moved_to": LINK_PATHS.get(next((l for tt, _, l in lab.sink.got[first_idx:]
                                                 if tt >= t0 and l in others), ""), None),
                "failover_ms": round((first - t0) * 1000, 1) if ok else None,
                "decision_ms": round((decision.at - t0) * 1000, 1) if decision else None,
                "lost": lost, "sent": len(window),
                "stream_pps": round(len(window) / (stream.sent[-1] - stream.sent[sent_before]), 1)
                if len(window) > 1 else None,
                "reason": decision.reason if decision else None}
    finally:
        stream.stop()


@click.command("failover")
@click.option("--interval", "interval_ms", type=click.IntRange(min=10), default=50,
              show_default=True, metavar="MS")
@click.option("--multiplier", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--pps", type=click.FloatRange(min=10), default=1000, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--tunnels", type=click.Choice(["auto", "gre", "none"]), default="auto",
              show_default=True, help="auto: GRE if this kernel has it, else fwmark routes only")
@click.option("--json", "as_json", is_flag=True, help="(always JSON lines; for symmetry)")
def bench_failover(interval_ms: int, multiplier: int, pps: float, runs: int, tunnels: str,
                   as_json: bool) -> None:
    """Time from blackholing the active path to the first packet of a UDP stream
    over another path, and packets lost (namespace lab; needs root)."""
    from argoctl.lab import vm
    from argoctl.lab.topo import Topology

    if tunnels == "auto":
        tunnels = "none" if "gre" in vm.missing_features() else "gre"
    policy = {"probe_interval_ms": interval_ms, "detect_multiplier": multiplier,
              "probe_timeout_ms": interval_ms * multiplier, "hold_down_s": 2.0,
              "recover_probes": 3, "metrics_listen": ""}
    results = []
    with tempfile.TemporaryDirectory() as tmp, Topology.default(f"agf{os.getpid()}") as t:
        t.start()
        lab = LoopLab(t, tmp, policy, tunnels=tunnels)
        try:
            lab.start()
            lab.wait_for(lambda: lab.choice() == "direct" and not lab.daemon._doubt, 30)
            for _ in range(runs):
                results.append(failover_once(lab, pps, settle=1.0, timeout=5.0))
                # let everything recover (hold-down) before the next run
                lab.wait_for(lambda: not lab.daemon._doubt, 20)
                time.sleep(policy["hold_down_s"] + 1)
        finally:
            lab.stop()
    ok = [r["failover_ms"] for r in results if r["failover_ms"] is not None]
    emit({"bench": "failover", "kernel": kernel_label(), "tunnels": tunnels,
          "interval_ms": interval_ms, "multiplier": multiplier, "pps": pps,
          "runs": results, "failover_ms_median": sorted(ok)[len(ok) // 2] if ok else None,
          "failover_ms_max": max(ok) if ok else None,
          "lost_max": max(r["lost"] for r in results) if results else None,
          "target_ms": 200})


