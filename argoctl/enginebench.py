"""`argoctl bench engine`: CPU cost of the estimators and the decision engine.

Pure Python, in process: N destinations x P paths, one probe result per
(destination, path) per round fed through Engine.probe_result (the
ProbeScheduler's callback), then one Engine.decide() per round, as the daemon
does at 1 Hz. RTTs carry +-20% seeded noise and a few paths fail and recover,
so hysteresis, hold-down and damping are all exercised. Reports CPU per round
and as a share of one core at the given interval (the probe sockets' own cost
is `argoctl bench probes`)."""

from __future__ import annotations

import random
import time

import click

from argoctl.config import DIRECT, Policy


def measure(dests: int, paths: int, rounds: int, interval_ms: int, seed: int = 1) -> dict:
    from argoctl.engine import Engine

    names = [DIRECT] + [f"r{i}" for i in range(1, paths)]
    pol = Policy(probe_interval_ms=interval_ms)
    interval = interval_ms / 1000.0
    now = [0.0]
    eng = Engine(pol, [(f"d{i}", names) for i in range(dests)], clock=lambda: now[0])
    rng = random.Random(seed)
    base = {(d, p): rng.uniform(5, 150) for d in range(dests) for p in names}
    dead = {k for k in base if rng.random() < 0.02}   # these fail for a while mid-run
    feed_cpu = decide_cpu = 0.0
    switches = 0
    for r in range(rounds):
        t = r * interval
        failing = rounds // 3 <= r < rounds // 2
        c0 = time.process_time()
        for (d, p), m in base.items():
            rtt = None if failing and (d, p) in dead else m * (1 + rng.uniform(-0.2, 0.2)) / 1000
            sent_ns = int(t * 1e9)
            now_ns = sent_ns + int((rtt if rtt is not None else pol.probe_timeout_ms / 1000) * 1e9)
            eng.probe_result(f"d{d}", p, r, sent_ns, rtt, now_ns)
        c1 = time.process_time()
        now[0] = t + interval / 2
        decisions = eng.decide()
        c2 = time.process_time()
        feed_cpu += c1 - c0
        decide_cpu += c2 - c1
        switches += sum(1 for dec in decisions.values() if dec.changed) if r else 0
    per_round = (feed_cpu + decide_cpu) / rounds
    return {"bench": "engine", "destinations": dests, "paths": paths, "rounds": rounds,
            "interval_ms": interval_ms,
            "feed_us_per_result": round(feed_cpu / rounds / (dests * paths) * 1e6, 2),
            "decide_ms_per_round": round(decide_cpu / rounds * 1e3, 2),
            "cpu_ms_per_round": round(per_round * 1e3, 2),
            "core_percent": round(100 * per_round / interval, 2),
            "decisions_changed": switches}


@click.command("engine")
@click.option("--destinations", "dests", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--paths", default=4, show_default=True, type=click.IntRange(1, 8))
@click.option("--rounds", default=60, show_default=True, type=click.IntRange(3))
@click.option("--interval-ms", default=1000, show_default=True, type=click.IntRange(10))
@click.option("--json", "as_json", is_flag=True, help="JSON lines (the only output format).")
def engine_bench(dests: int, paths: int, rounds: int, interval_ms: int, as_json: bool) -> None:
    """CPU of estimators + decisions for DESTINATIONS x PATHS at INTERVAL."""
    from argoctl.bench import emit

    emit(measure(dests, paths, rounds, interval_ms))
