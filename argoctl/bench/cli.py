"""`argoctl bench ...`: benchmarks that print one JSON object per line
(argoctl/bench/report.py). Each subcommand lives beside its measurement code."""

from __future__ import annotations

import click

from argoctl.bench.control import bench_control
from argoctl.bench.datapath import bench_datapath, bench_datapath_throughput
from argoctl.bench.engine import engine_bench, state_bench
from argoctl.bench.failover import bench_failover
from argoctl.bench.fleet import bench_fleet
from argoctl.bench.fleetsim import bench_fleetsim
from argoctl.bench.peers import bench_peers
from argoctl.bench.probes import probes_bench
from argoctl.bench.reroute import bench_reroute
from argoctl.bench.up import bench_up


@click.group("bench")
def bench() -> None:
    """Benchmarks; each prints one JSON object per line."""


for _command in (bench_up, probes_bench, bench_datapath, bench_datapath_throughput,
                 engine_bench, state_bench, bench_failover, bench_control, bench_fleet,
                 bench_fleetsim, bench_peers, bench_reroute):
    bench.add_command(_command)
