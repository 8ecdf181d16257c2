"""The peers' configs (argoctl/lab/peers.py) and the bench's arithmetic
(argoctl/bench/peers.py): BIRD's own parser checks every config it would run."""

from __future__ import annotations

import ipaddress
import subprocess

import pytest

from argoctl.bench import peers as benchpeers
from argoctl.lab import peers as labpeers
from argoctl.lab import topo as netns_topo


def test_tunnel_ends_mirror_each_other_and_stay_in_documentation_space():
    seen = set()
    for a, b in netns_topo.MESH_PAIRS:
        ta, tb = labpeers.tunnel_to(a, b), labpeers.tunnel_to(b, a)
        assert (ta.address, ta.peer_address) == (tb.peer_address, tb.address)
        assert ta.index == tb.index
        net = ipaddress.ip_interface(f"{ta.address}/30").network
        assert net.subnet_of(labpeers.TUNNEL_NET) and ipaddress.ip_address(tb.address) in net
        assert net not in seen and not net.overlaps(ipaddress.ip_network(netns_topo.CLIENT_LAN[0]))
        seen.add(net)
    assert {t.peer for t in labpeers.tunnels("edge")} == {"relay1", "relay2", "origin"}


@pytest.mark.parametrize("setting", labpeers.SETTINGS)
@pytest.mark.parametrize("node", labpeers.NODES)
def test_bird_accepts_every_config(tmp_path, node, setting):
    conf = tmp_path / "bird.conf"
    conf.write_text(labpeers.bird_conf(node, setting, str(tmp_path)))
    proc = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + conf.read_text()


def test_bird_ranks_direct_first_then_the_nearer_relay_and_protects_each_with_bfd():
    conf = labpeers.bird_conf("edge", "fast", "/x")
    lines = [l for l in conf.splitlines() if l.startswith("protocol static")]
    hops = {labpeers.tunnel_to("edge", p).peer_address: p for p in ("origin", "relay1", "relay2")}
    ranked = sorted(((int(l.split("preference ")[1].split(";")[0]),
                      hops[l.split(" via ")[1].split()[0]]) for l in lines), reverse=True)
    assert [h for _, h in ranked] == ["origin", "relay1", "relay2"]
    assert all(" bfd;" in l and netns_topo.ORIGIN_PREFIX[0] in l for l in lines)
    assert "interval 50 ms; multiplier 3" in conf
    assert "interval" not in labpeers.bird_conf("edge", "default", "/x")
    assert "kernel table 173" in conf


def test_babeld_tunnels_are_rtt_aware_and_only_the_overlay_prefixes_are_announced():
    for node in labpeers.NODES:
        for setting in labpeers.SETTINGS:
            conf = labpeers.babeld_conf(node, setting, "/x").splitlines()
            ifaces = [l for l in conf if l.startswith("interface ")]
            assert len(ifaces) == 3 and all("type tunnel" in l and "enable-timestamps true" in l
                                            for l in ifaces)
            assert all(("hello-interval 0.1" in l) == (setting == "fast") for l in ifaces)
            assert conf[-1] == "redistribute local deny"
            allowed = [l for l in conf if l.startswith("redistribute ip")]
            assert allowed == ([f"redistribute ip {labpeers.OVERLAY[node]} eq "
                                f"{labpeers.OVERLAY[node].split('/')[1]} proto 4 allow"]
                               if node in labpeers.OVERLAY else [])
            assert f"export-table {labpeers.PEER_TABLE}" in conf


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="setting"):
        labpeers.bird_conf("edge", "turbo", "/x")
    with pytest.raises(ValueError, match="system"):
        labpeers.PeerMesh(None, "ospf", "fast", "/x")


def _row(start, fwd, ret, ok=True, lat=0.02, sent=None):
    return {"started": start, "ok": ok, "latency": lat if ok else None,
            **({"fwd": fwd, "ret": ret, "fwd_at": start + lat / 2, "ret_at": start + lat,
                "sent_at": start if sent is None else sent} if ok else {})}


def test_metrics_failover_is_the_first_answered_delivery_elsewhere_and_switches_count_moves():
    t0 = 100.0
    rows = [_row(100.00, "direct", "direct"), _row(100.02, None, None, ok=False),
            _row(100.04, None, None, ok=False), _row(100.06, "direct", "relay1"),
            _row(100.08, "relay1", "relay1"), _row(100.10, "relay1", "relay1"),
            _row(100.12, "relay2", "relay2")]
    m = benchpeers.metrics(rows, t0)
    assert m["failover_ms"] == pytest.approx(80.0)      # the reply of 100.06 at 100.08
    assert m["ok_pct"] == pytest.approx(100 * 5 / 7, abs=0.01)
    assert m["switches"] == 2                           # direct -> relay1 -> relay2 (forward)
    assert m["paths"] == {"direct": 1, "direct/relay1": 1, "relay1": 2, "relay2": 1}
    assert benchpeers.metrics([_row(100.0, "direct", "direct")], t0)["failover_ms"] is None


def test_path_names_map_every_systems_interfaces():
    assert {benchpeers.path_of(n) for n in ("to-edge", "pe-edge", "to-origin", "pe-origin")} \
        == {"direct"}
    assert {benchpeers.path_of(n) for n in ("ag-relay1", "pe-relay1", "to-relay1")} == {"relay1"}


def test_target_needs_ok_at_least_the_best_peers_and_failover_within_ten_percent():
    def r(system, setting, ok, fo):
        return {"system": system, "setting": setting, "scenario": "outage", "ok_pct": ok,
                "failover_ms": fo}
    peers = [r("babeld", "fast", 90.0, 300.0), r("bird-bfd", "fast", 95.0, 200.0)]
    assert benchpeers.target([r("argoctl", "fast", 95.0, 215.0), *peers])["outage"]["met"]
    assert not benchpeers.target([r("argoctl", "fast", 95.0, 230.0), *peers])["outage"]["met"]
    assert not benchpeers.target([r("argoctl", "fast", 94.0, 100.0), *peers])["outage"]["met"]
    never = [r("babeld", "fast", 50.0, None)]
    assert benchpeers.target([r("argoctl", "fast", 60.0, 900.0), *never])["outage"]["met"]
    assert not benchpeers.target([r("argoctl", "fast", 60.0, None),
                                  r("bird-bfd", "default", 50.0, 400.0)])["outage"]["met"]


def test_a_system_off_direct_before_the_fault_has_no_failover_time():
    """babeld in run E's brownout: requests over a relay 20 ms after a +100 ms
    fault, before anything could show the delay. A move under way at the fault
    is not a failover: neither a peer's best time nor argoctl's."""
    def r(system, fo, at_fault=True):
        return {"system": system, "setting": "fast", "scenario": "brownout", "ok_pct": 100.0,
                "failover_ms": fo, "direct_at_fault": at_fault}
    early = r("babeld", 20.0, at_fault=False)
    got = benchpeers.target([r("argoctl", 160.0), early, r("bird-bfd", None)])["brownout"]
    assert got["met"] and got["best_peer_failover_ms"] is None
    assert not benchpeers.target([r("argoctl", 160.0), r("babeld", 20.0)])["brownout"]["met"]
    assert not benchpeers.target([r("argoctl", 100.0, at_fault=False),
                                  r("bird-bfd", 150.0)])["brownout"]["met"]


def test_direct_at_the_fault_means_every_attempt_sent_before_it_went_direct_both_ways():
    def direct(rows):
        return benchpeers.at_fault(rows, 10.0)["direct_at_fault"]
    lost = _row(9.8, None, None, ok=False)
    before = _row(9.7, "direct", "direct")
    assert direct([before, lost])
    assert not direct([before, _row(9.9, "relay2", "direct")])
    assert not direct([lost])     # nothing answered: unknown
    # sent just before the fault, answered by its retry after it, over a relay: still direct
    retried = _row(9.99, "relay1", "relay1", lat=0.3, sent=10.24)
    assert direct([before, retried])


def test_the_attempts_off_direct_before_the_fault_are_listed():
    t0 = 10.0
    got = benchpeers.at_fault([_row(9.7, "direct", "direct"), _row(9.9, "relay2", "direct"),
                               _row(9.0, "relay1", "relay1")], t0)
    assert got == {"direct_at_fault": False,
                   "off_direct_before": [{"sent_s": -0.1, "fwd": "relay2", "ret": "direct"}]}
    assert benchpeers.at_fault([_row(9.7, "direct", "direct")], t0) == {"direct_at_fault": True}
