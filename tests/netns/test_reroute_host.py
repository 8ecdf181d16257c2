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
