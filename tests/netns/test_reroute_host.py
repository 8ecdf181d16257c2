"""Protective reroute on the host kernel (namespaces, fwmark paths, no tunnels):
the same scenario as tests/integration/test_reroute.py, with edge -> origin
blackholed one way only (without tunnels origin answers relayed connections
straight to edge, so that way must work). The sock_ops RTO callback and the tc
re-pin run on this kernel as they do on Debian's 6.1 in the VM."""

from __future__ import annotations

import os

import pytest

from argoctl import maps
from argoctl.bench import reroute as bench

CONNECT_S = 2.5
WINDOW_S = 4.0


@pytest.fixture(scope="module")
def lab(lab_module, tmp_path_factory):
    cgroup = bench.make_cgroup("hrr")
    lab = None
    try:
        lab = bench.start_lab(lab_module, str(tmp_path_factory.mktemp("reroute")), cgroup,
                              tunnels="none")
        yield lab
    finally:
        if lab is not None:
            if getattr(lab, "tcp", None):
                lab.tcp.stop()
            lab.stop()
        os.rmdir(cgroup)


def test_every_connection_completes_across_a_one_way_blackhole(lab):
    assert bench.steady(lab), lab.daemon.engine.last("origin")
    run = bench.blackhole_run(lab, window=WINDOW_S, rate=5, timeout=CONNECT_S,
                              direction="a->b")
    for source in ("forwarded", "local"):
        attempts = run[source]
        assert len(attempts) >= WINDOW_S * 5 * 0.5, (source, attempts)
        assert all(ok is not None for _, ok in attempts), (source, attempts)
        # the ones that met the blackhole took one SYN timeout, not two or more
        assert max(ok for _, ok in attempts) < CONNECT_S
    assert run["reroutes"] >= 2, run
    with maps.Maps(lab.pin_dir) as m:
        assert maps.reroute_on(m.settings())


def test_status_explain_and_metrics_show_policy_reroute(lab):
    """What a user reads: `argoctl status` (the datapath's table), `explain`
    (from the daemon's state file) and the exporter say reroute is on, and the
    reroutes of the blackhole above stand against direct."""
    from rich.console import Console

    from argoctl import datapath, explain, metrics, status
    edge = lab.topo["edge"]
    st = datapath.status(lab.pin_dir, netns=edge.netns, cgroup=lab.cgroup)
    assert st["reroute"] is True and st["cgroup_hooks"]
    direct = lab.configs["edge"].path_id("direct")
    assert st["paths"][direct]["reroutes"] >= 2
    console = Console(width=200, record=True)
    for table in status.status_table(st, status.path_names(lab.configs["edge"])):
        console.print(table)
    out = console.export_text()
    assert "protective reroute on" in out and "rerouted away" in out
    assert lab.wait_for(lambda: explain.load(lab.run_dir, edge.netns).get("reroute"), 10, 0.2)
    assert "protective reroute: on" in explain.text(explain.load(lab.run_dir, edge.netns),
                                                   "origin")
    text = metrics.Exporter(lab.daemon).text()
    assert "argoctl_policy_reroute 1" in text
    assert f'argoctl_reroute_total{{path="direct"}} {st["paths"][direct]["reroutes"]}' in text
