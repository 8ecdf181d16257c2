"""Protective reroute in the loop lab (GRE tunnels, probes at their defaults:
1 s x 3): with the direct path blackholed both ways, every new connection
completes, whether it is forwarded (from the client behind edge: tc) or local
(from a process on edge under the cgroup hooks: sock_ops re-marks it on its
SYN's RTO). The scenario is `argoctl bench reroute`'s (argoctl/bench/reroute.py).

Without the reroute a connection opened as the blackhole starts needs its
second SYN retransmission (3 s after it started) at the earliest, after the
probes marked direct down: so every connection completing within CONNECT_S
(one SYN timeout, 1 s, plus a wide margin for the VM) is the reroute's doing,
and the datapath's counters say so.
"""

from __future__ import annotations

import os

import pytest

from argoctl import maps
from argoctl.bench import reroute as bench

CONNECT_S = 2.5
WINDOW_S = 5.0


@pytest.fixture(scope="module")
def lab(lab_module, tmp_path_factory):
    cgroup = bench.make_cgroup("trr")
    lab = None
    try:
        lab = bench.start_lab(lab_module, str(tmp_path_factory.mktemp("reroute")), cgroup)
        yield lab
    finally:
        if lab is not None:
            if getattr(lab, "tcp", None):
                lab.tcp.stop()
            lab.stop()
        os.rmdir(cgroup)


def test_every_connection_completes_across_a_blackhole(lab):
    assert bench.steady(lab), lab.daemon.engine.last("origin")
    with maps.Maps(lab.pin_dir) as m:
        assert maps.reroute_on(m.settings())          # policy.reroute defaults on
        direct = m.path_stats(lab.configs["edge"].path_id("direct"))
    peers0 = len(lab.tcp.peers)
    run = bench.blackhole_run(lab, window=WINDOW_S, rate=5, timeout=CONNECT_S)
    for source in ("forwarded", "local"):
        attempts = run[source]
        assert len(attempts) >= WINDOW_S * 5 * 0.5, (source, attempts)   # (a slow VM)
        failed = [(round(s, 2), ok) for s, ok in attempts if ok is None]
        assert not failed, (source, failed, run)
    # The ones that met the blackhole were moved by the datapath, counted against direct.
    assert run["reroutes"] >= 2, run
    with maps.Maps(lab.pin_dir) as m:
        after = m.path_stats(lab.configs["edge"].path_id("direct"))
    assert after.reroutes - direct.reroutes == run["reroutes"]
    # Origin saw connections arrive from the relays (masqueraded).
    relays = {lab.topo.link(r, "origin").address(lab.topo[r]) for r in ("relay1", "relay2")}
    assert set(lab.tcp.peers[peers0:]) & relays
    # The engine decided too (probes and the SYN evidence), later: the reroute did not wait.
    assert run["decision_ms"] is not None, run
