"""`argoctl bench engine`: CPU cost of the estimators and the decision engine.

In process: N destinations x P paths, one probe result per
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
    dnames = [f"d{i}" for i in range(dests)]
    eng = Engine(pol, [(n, names) for n in dnames], clock=lambda: now[0])
    rng = random.Random(seed)
    base = {(d, p): rng.uniform(5, 150) for d in range(dests) for p in names}
    dead = {k for k in base if rng.random() < 0.02}   # these fail for a while mid-run
    feed_cpu = decide_cpu = 0.0
    switches = 0
    for r in range(rounds):
        t = r * interval
        failing = rounds // 3 <= r < rounds // 2
        # The round's results are drawn first: the feed timing is the engine's alone.
        results = []
        for (d, p), m in base.items():
            rtt = None if failing and (d, p) in dead else m * (1 + rng.uniform(-0.2, 0.2)) / 1000
            sent_ns = int(t * 1e9)
            now_ns = sent_ns + int((rtt if rtt is not None else pol.probe_timeout_ms / 1000) * 1e9)
            results.append((dnames[d], p, r, sent_ns, rtt, now_ns))
        feed = eng.probe_result
        c0 = time.process_time()
        for args in results:
            feed(*args)
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
            # compiled: argoctl/_pathcore.c's path states (the default when built)
            "path_states": "compiled" if eng.native else "python",
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
    from argoctl.bench.report import emit

    emit(measure(dests, paths, rounds, interval_ms))


def measure_state(dests: int, paths: int, rounds: int, interval_ms: int, seed: int = 1) -> dict:
    """CPU of one state-file write (as Daemon._write_state: build the text, then
    write and rename) for DESTS x
    PATHS, each (destination, path) its own estimator, after rounds of probe
    results and decisions as in `measure`. The daemon writes it whenever the maps
    change and at least every STATE_REFRESH_S."""
    import tempfile

    from argoctl import mac
    from argoctl.bench.control import control_config
    from argoctl.daemon import STATE_REFRESH_S, Daemon, Options, initial_weights, write_state_text
    from argoctl.engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        key_file = f"{tmp}/probe.key"
        mac.write_key(key_file)
        cfg = control_config(tmp, key_file, dests, paths, interval_ms, targets=dests)
        now = [0.0]
        d = Daemon(cfg, Options(run_dir=f"{tmp}/run"), clock=lambda: now[0])
        d.engine = eng = Engine.from_config(cfg, clock=lambda: now[0])
        for dest in cfg.destinations:
            d.written[dest.name] = initial_weights(cfg, dest)
            d.chosen_since[dest.name] = 0.0
        rng = random.Random(seed)
        base = {(dest.name, p): rng.uniform(5, 150) for dest in cfg.destinations
                for p in dest.paths}
        interval = interval_ms / 1000.0
        build = write = 0.0
        size = 0
        for r in range(rounds):
            t = r * interval
            for (dn, p), m in base.items():
                rtt = m * (1 + rng.uniform(-0.2, 0.2)) / 1000
                eng.probe_result(dn, p, r, int(t * 1e9), rtt, int((t + rtt) * 1e9))
            now[0] = t + interval / 2
            for name, dec in eng.decide().items():
                d.written[name] = dec.weights     # as if the maps took every decision
            c0 = time.process_time()
            text = d.state_text()
            c1 = time.process_time()
            write_state_text(d.state_file, text)
            c2 = time.process_time()
            build += c1 - c0
            write += c2 - c1
        with open(d.state_file) as f:
            size = len(f.read())
    per_write = (build + write) / rounds
    return {"bench": "state-file", "destinations": dests, "paths": paths, "rounds": rounds,
            "build_ms": round(build / rounds * 1e3, 2),
            "write_state_ms": round(write / rounds * 1e3, 2),
            "ms_per_write": round(per_write * 1e3, 2), "bytes": size,
            "core_percent_at_refresh": round(100 * per_write / STATE_REFRESH_S, 2)}


@click.command("state-file")
@click.option("--destinations", "dests", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--paths", default=4, show_default=True, type=click.IntRange(1, 8))
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(1))
@click.option("--interval-ms", default=1000, show_default=True, type=click.IntRange(10))
@click.option("--json", "as_json", is_flag=True, help="JSON lines (the only output format).")
def state_bench(dests: int, paths: int, rounds: int, interval_ms: int, as_json: bool) -> None:
    """CPU of one state.json write (build + encode + rename) for DESTINATIONS x PATHS."""
    from argoctl.bench.report import emit

    emit(measure_state(dests, paths, rounds, interval_ms))
