"""`argoctl bench ...`: benchmarks that print one JSON object per line.

Each subcommand lives next to its measurement code and registers itself here."""

from __future__ import annotations

import json
import sys

import click


def emit(record: dict) -> None:
    """Print one benchmark result as a single JSON line (flushed: benches are long)."""
    sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()


@click.group("bench")
def bench() -> None:
    """Benchmarks; each prints one JSON object per line."""


from argoctl.upbench import bench_up  # noqa: E402

bench.add_command(bench_up)


from argoctl.probebench import probes_bench  # noqa: E402

bench.add_command(probes_bench)


from argoctl.bench_datapath import bench_datapath, bench_datapath_throughput  # noqa: E402

bench.add_command(bench_datapath)
bench.add_command(bench_datapath_throughput)


from argoctl.enginebench import engine_bench, state_bench  # noqa: E402

bench.add_command(engine_bench)
bench.add_command(state_bench)


from argoctl.bench_loop import bench_control, bench_failover  # noqa: E402

bench.add_command(bench_failover)
bench.add_command(bench_control)
