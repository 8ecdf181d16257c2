"""`argoctl bench peers`, short form: each system (babeld, BIRD with BFD, argoctl)
comes up alone on the standard lab over GRE, routes the client's requests over
the direct path, and moves them to a relay when direct is blackholed (the bench's
outage scenario, measured the bench's way: from packets at origin and edge).
The systems take turns on one lab (booting a lab per system is most of the cost
in the VM); each peer must leave it as it found it, which the turns check too.
argoctl goes last: its relays' tunnels stay up until the lab is removed.
The full matrix is `make bench` (argoctl bench peers)."""

from __future__ import annotations

import sys

import pytest

from argoctl.bench import peers as benchpeers
from argoctl.lab import peers as labpeers


@pytest.fixture(scope="module")
def peers_lab(lab_module):
    benchpeers.PeersEnv.geography(lab_module)
    return lab_module


def leftovers(lab) -> list[str]:
    """What a peer mesh leaves on the lab: its tunnels, rules and routes."""
    out = []
    for node in labpeers.NODES:
        h = lab[node]
        links = h.run(["ip", "-o", "link", "show"]).stdout
        rules = h.run(["ip", "rule"]).stdout
        routes = "".join(h.run(["ip", "route", "show", "table", str(t)]).stdout
                         for t in (labpeers.PEER_TABLE, labpeers.IMPORT_TABLE))
        if "pe-" in links or str(labpeers.PEER_RULE_PRIORITY) in rules or routes.strip():
            out.append(f"{node}: {links}{rules}{routes}")
    return out


def test_peer_mesh_is_removed_with_its_daemons(peers_lab, tmp_path):
    mesh = labpeers.PeerMesh(peers_lab, "bird-bfd", "default", str(tmp_path)).start()
    procs = list(mesh.procs.values())
    assert len(procs) == len(labpeers.NODES) and all(p.poll() is None for p in procs)
    assert "pe-" in peers_lab["edge"].run(["ip", "-o", "link", "show"]).stdout
    mesh.stop()
    assert all(p.poll() is not None for p in procs)
    assert leftovers(peers_lab) == []


@pytest.mark.parametrize("system", [*labpeers.SYSTEMS, "argoctl"])
def test_system_comes_up_routes_and_fails_over(system, peers_lab):
    rows = benchpeers.run_system(system, "fast", ["outage"], topo=peers_lab,
                                 say=lambda m: print(m, file=sys.stderr, flush=True))
    [r] = rows
    print(r, file=sys.stderr)
    assert r["settled_before"], r                  # it routed over direct first
    # the fault is one instant: netlink messages from the bench, not `tc` processes
    # (seconds each in the VM, which made failover unmeasurable)
    assert r["fault"] == "netlink" and r["impair_apply_ms"] < 500, r
    assert r["failover_ms"] is not None, r         # then delivered over a relay
    assert set(r["paths"]) - {"direct"}, r
    assert r["ok_pct"] > 50, r
    if system != "argoctl":
        assert leftovers(peers_lab) == []
