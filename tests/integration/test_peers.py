"""`argoctl bench peers`, short form: each system (argoctl, babeld, BIRD with BFD)
comes up alone on the standard lab over GRE, routes the client's requests over
the direct path, and moves them to a relay when direct is blackholed (the bench's
outage scenario, measured the bench's way: from packets at origin and edge).
The full matrix is `make bench` (argoctl bench peers)."""

from __future__ import annotations

import sys

import pytest

from argoctl.bench import peers as benchpeers
from argoctl.lab import peers as labpeers
from argoctl_fixtures import new_prefix


@pytest.mark.parametrize("system", benchpeers.SYSTEMS)
def test_system_comes_up_routes_and_fails_over(system):
    rows = benchpeers.run_system(system, "fast", ["outage"], prefix=new_prefix(),
                                 say=lambda m: print(m, file=sys.stderr, flush=True))
    [r] = rows
    assert r["settled_before"], r                  # it routed over direct first
    assert r["failover_ms"] is not None, r         # then delivered over a relay
    assert set(r["paths"]) - {"direct"}, r
    assert r["ok_pct"] > 50, r


def test_peer_mesh_is_removed_with_its_daemons(lab, tmp_path):
    mesh = labpeers.PeerMesh(lab, "bird-bfd", "default", str(tmp_path)).start()
    procs = list(mesh.procs.values())
    assert all(p.poll() is None for p in procs)
    mesh.stop()
    assert all(p.poll() is not None for p in procs)
    for node in labpeers.NODES:
        links = lab[node].run(["ip", "-o", "link", "show"]).stdout
        rules = lab[node].run(["ip", "rule"]).stdout
        assert "pe-" not in links and str(labpeers.PEER_RULE_PRIORITY) not in rules
