"""The daemon's wiring that needs no kernel: decisions -> path sets, the state file,
`explain`, the single-instance lock and the metrics exposition. Real configs (the
lab's, through the loader), a real engine fed probe results."""

from __future__ import annotations

import json
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from argoctl import daemon as dmn
from argoctl import explain, mac, maps, metrics, metrics_names
from argoctl.lab import configs as labconfig
from argoctl.config import load
from argoctl.engine import Engine
from argoctl.probe import ProbeScheduler

POLICY = (("probe_interval_ms", 100), ("hold_down_s", 2.0))


@pytest.fixture
def cfg(tmp_path):
    topo = labconfig.LabTopology(**{**labconfig.default_topology().__dict__, "policy": POLICY})
    paths = labconfig.write_lab_configs(str(tmp_path), topo, "gre", only="edge")
    return load(paths["edge"])


def _fed_engine(cfg, rtts: dict[str, float], rounds: int = 30) -> Engine:
    """An engine whose paths answered `rounds` probes with these RTTs (seconds);
    paths not in `rtts` never answer."""
    now = [100.0]
    eng = Engine.from_config(cfg, clock=lambda: now[0])
    for seq in range(1, rounds + 1):
        for path in cfg.destinations[0].paths:
            rtt = rtts.get(path)
            eng.probe_result("origin", path, seq, int(now[0] * 1e9), rtt,
                             int((now[0] + (rtt or 0.3)) * 1e9))
        now[0] += 0.1
        eng.decide()
    return eng


def test_decision_weights_become_the_path_set_in_path_order(cfg):
    dest = cfg.destinations[0]
    assert dest.paths == ("direct", "relay1", "relay2")
    w = {"relay2": (100, True), "direct": (0, False), "relay1": (0, True)}
    ps = dmn.pathset(cfg, dest.paths, w)
    assert [(p.path_id, p.mark, p.weight, p.up) for p in ps] == [
        (0, 0x000000FF, 0, False), (1, 0x00000001, 0, True), (2, 0x00000002, 100, True)]
    # what the datapath stores and reads back is the same decision
    gen, back = maps.decode_pathset(maps.encode_pathset(ps, 7))
    assert gen == 7 and dmn.weights_of(cfg, dest.paths, back) == w
    assert dmn.choice_of(dest.paths, w) == "relay2"


def test_a_path_set_of_another_config_is_not_adopted(cfg):
    dest = cfg.destinations[0]
    w = dmn.initial_weights(cfg, dest)
    ps = dmn.pathset(cfg, dest.paths, w)
    assert dmn.weights_of(cfg, dest.paths, ps[:2]) is None             # a path less
    swapped = [ps[0], ps[2], ps[1]]
    assert dmn.weights_of(cfg, dest.paths, swapped) is None            # other order
    remarked = [maps.Path(p.path_id, p.mark ^ 0x00100000, p.weight, p.up) for p in ps]
    assert dmn.weights_of(cfg, dest.paths, remarked) is None           # other fwmark mask


def test_initial_weights_direct_first_else_config_split(cfg):
    dest = cfg.destinations[0]
    assert dmn.initial_weights(cfg, dest) == {
        "direct": (100, True), "relay1": (0, True), "relay2": (0, True)}
    split = dest.__class__(**{**dest.__dict__, "paths": ("relay1", "relay2"),
                              "weights": (30, 70)})
    assert dmn.initial_weights(cfg, split) == {"relay1": (30, True), "relay2": (70, True)}
    relays = dest.__class__(**{**dest.__dict__, "paths": ("relay2", "relay1")})
    assert dmn.choice_of(relays.paths, dmn.initial_weights(cfg, relays)) == "relay2"
    # ties go to the earlier path in preference order
    assert dmn.choice_of(("relay1", "relay2"), {"relay1": (50, True), "relay2": (50, True)}) \
        == "relay1"


def test_state_file_round_trip_and_explain(cfg, tmp_path):
    eng = _fed_engine(cfg, {"direct": 0.030, "relay1": 0.010})   # relay2 never answers
    dec = eng.last("origin")
    doc = {"version": dmn.STATE_VERSION, "pid": os.getpid(), "running": True,
           "updated": 1e9, "destinations": {"origin": {
               "id": 1, "switches": 1, **dmn.decision_doc(dec, 1e9, dec.at - 5)}}}
    path = dmn.state_path(str(tmp_path / "run"), "ns1")
    dmn.write_state(path, doc)
    assert path.endswith("netns/ns1/state.json")
    assert os.listdir(os.path.dirname(path)) == ["state.json"]     # no temp file left
    loaded = explain.load(str(tmp_path / "run"), "ns1")
    assert not loaded["stale"]
    origin = loaded["destinations"]["origin"]
    assert origin["paths"]["relay2"]["state"] == "down"
    assert origin["paths"]["direct"]["rtt_ms"] == pytest.approx(30, abs=0.01)
    text = explain.text(loaded, "origin")
    lines = text.splitlines()
    assert lines[0] == f"origin: {dec.choice}" and lines[1] == f"  reason: {dec.reason}"
    assert any(line.split()[:2] == ["relay2", "down"] for line in lines)
    with pytest.raises(KeyError, match="known: origin"):
        explain.text(loaded, "nope")
    choices = explain.live_choices(str(tmp_path / "run"), "ns1")
    assert choices["running"] and choices["destinations"]["origin"]["paths"]["relay2"] == "down"


def test_a_dead_writer_makes_the_state_stale_and_other_versions_are_named(tmp_path):
    run = str(tmp_path)
    path = dmn.state_path(run)
    dmn.write_state(path, {"version": dmn.STATE_VERSION, "pid": 2 ** 22 + 12345,
                           "running": True, "updated": 0, "destinations": {}})
    assert explain.load(run)["stale"]
    dmn.write_state(path, {"version": 99, "destinations": {}})
    with pytest.raises(ValueError, match="version 99"):
        explain.load(run)
    with pytest.raises(ValueError, match=f"{path}: state file version 99"):
        explain.live_choices(run)       # said (status reports it), never silently left out
    assert explain.live_choices(str(tmp_path / "never")) is None


def test_single_instance_lock(tmp_path):
    a = dmn.InstanceLock(str(tmp_path))
    a.acquire()
    with open(a.path) as f:
        assert f.read().strip() == f"{os.getpid()} run"
    b = dmn.InstanceLock(str(tmp_path))
    with pytest.raises(dmn.DaemonError, match=f"pid {os.getpid()}"):
        b.acquire()
    a.release()
    b.acquire()          # released: the next run gets it
    b.release()


def test_metrics_exposition_follows_the_contract(cfg):
    d = dmn.Daemon(cfg, dmn.Options(metrics_listen=""))
    d.engine = _fed_engine(cfg, {"direct": 0.030, "relay1": 0.010})
    d.written = {"origin": d.engine.last("origin").weights}
    d.switches["origin"] = 2
    # probe results are the prober's counts (a scheduler built, never started)
    d.sched = ProbeScheduler.from_config(cfg, lambda *a: None, key=mac.EchoKey(b"k" * 32))
    d.sched.probers[("origin", "relay1")].received = 30
    text = metrics.Exporter(d).text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    # without a datapath (no maps), everything but the datapath counters
    datapath_only = {"argoctl_datapath_packets_total", "argoctl_datapath_bytes_total",
                     "argoctl_destination_packets_total", "argoctl_passive_syn_total",
                     "argoctl_passive_synack_total", "argoctl_passive_handshake_rtt_seconds"}
    series = {s.name for f in fams.values() for s in f.samples}
    assert series == {s for m in metrics_names.METRICS if m.name not in datapath_only
                      for s in m.series}
    for f in fams.values():
        for s in f.samples:
            base = s.name if s.name in metrics_names.BY_NAME else f.name + "_total"
            m = metrics_names.BY_NAME.get(base) or metrics_names.BY_NAME[f.name]
            assert set(s.labels) == set(m.labels), (s.name, s.labels)

    def value(name, **labels):
        return next(s.value for f in fams.values() for s in f.samples
                    if s.name == name and s.labels == labels)
    chosen = d.engine.last("origin").choice
    assert value("argoctl_path_chosen", dest="origin", path=chosen) == 1
    assert value("argoctl_path_state", dest="origin", path="relay2") == 0
    assert value("argoctl_path_state", dest="origin", path="relay1") == 2
    assert value("argoctl_path_rtt_seconds", dest="origin", path="direct") == \
        pytest.approx(0.030, abs=1e-6)
    assert value("argoctl_path_switches_total", dest="origin") == 2
    assert value("argoctl_probe_results_total", dest="origin", path="relay1", result="ok") == 30
    assert json.dumps(metrics.parse_listen("[::1]:9474")) == '["::1", 9474]'


class _FakeStats:
    """Datapath counters without a datapath (the formatting is under test here)."""
    packets, bytes, syns, synacks, rtt_count, rtt_sum_ns = 12345678, 2**40, 7, 0, 3, 123456789


class _FakeMaps:
    def path_stats(self, path_id):
        return _FakeStats()

    def dest_stats(self, dest_id):
        return _FakeStats()


def test_the_exposition_is_byte_identical_to_prometheus_clients(cfg):
    """Exporter.text() formats the samples itself (prometheus_client's
    generate_latest costs ~4x as much at 4,000 paths); both must agree to the
    byte, with values that print in exponent form, infinities and label values
    that need escaping."""
    from prometheus_client import CollectorRegistry, generate_latest
    d = dmn.Daemon(cfg, dmn.Options(metrics_listen=""))
    d.engine = _fed_engine(cfg, {"direct": 0.030, "relay1": 0.010})
    d.written = {"origin": d.engine.last("origin").weights}
    d.switches["origin"] = 123456789012
    d.maps = _FakeMaps()
    exp = metrics.Exporter(d)
    real = exp.collector.samples

    def samples():
        out = real()
        out["argoctl_path_switches_total"].append((('we"ird\\dest\nname',), float("inf")))
        out["argoctl_path_loss_ratio"].append((("x", "y"), 1e-7))
        return out
    exp.collector.samples = samples
    reg = CollectorRegistry(auto_describe=False)
    reg.register(exp.collector)
    text = exp.text()
    assert text == generate_latest(reg).decode()
    assert 'argoctl_path_switches_total{dest="we\\"ird\\\\dest\\nname"} +Inf' in text
    assert "argoctl_datapath_bytes_total{path=\"direct\"} 1.099511627776e+12" in text
