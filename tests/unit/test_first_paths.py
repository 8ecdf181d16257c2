"""One rule for a destination's first path set (config.first_weights): what `up`
writes to the maps (datapath.config_pathsets), what `run` starts from (the daemon
and the engine), and configured weights held until measurements decide."""

from __future__ import annotations

import dataclasses

import pytest

from argoctl import daemon as dmn
from argoctl import datapath
from argoctl.config import load
from argoctl.engine import Engine
from argoctl.lab import configs as labconfig


@pytest.fixture
def cfg(tmp_path):
    topo = labconfig.LabTopology(**{**labconfig.default_topology().__dict__,
                                    "policy": (("probe_interval_ms", 100),)})
    c = load(labconfig.write_lab_configs(str(tmp_path), topo, "gre", only="edge")["edge"])
    dest = dataclasses.replace(c.destinations[0], paths=("relay1", "direct"))
    return dataclasses.replace(c, destinations=(dest,))


def _weighted(cfg, weights):
    dest = dataclasses.replace(cfg.destinations[0], weights=weights)
    return dataclasses.replace(cfg, destinations=(dest,))


def _engine_first(cfg, now):
    eng = Engine.from_config(cfg, clock=lambda: now[0])
    return eng, eng.decide()["origin"]


def test_up_and_run_start_from_the_same_path_set(cfg):
    dest = cfg.destinations[0]
    up_set = datapath.config_pathsets(cfg)[dest.id]
    run_set = dmn.pathset(cfg, dest.paths, dmn.initial_weights(cfg, dest))
    _, first = _engine_first(cfg, [10.0])
    assert up_set == run_set == dmn.pathset(cfg, dest.paths, first.weights)
    # ["relay1", "direct"]: direct takes the new flows (the engine's default too)
    assert [(p.path_id, p.weight) for p in up_set] == [(1, 0), (0, 100)]
    assert first.choice == "direct"


def test_configured_weights_hold_until_measurements_decide(cfg):
    cfg = _weighted(cfg, (70, 30))
    dest = cfg.destinations[0]
    now = [10.0]
    eng, first = _engine_first(cfg, now)
    assert first.weights == {"relay1": (70, True), "direct": (30, True)} == dest.first_weights()
    assert datapath.config_pathsets(cfg)[dest.id] == dmn.pathset(cfg, dest.paths, first.weights)
    assert first.choice == "relay1"
    # direct answers first: relay1 (the split's main path) gets its start-up grace,
    # and the configured split holds meanwhile
    eng.probe_result("origin", "direct", 1, int(now[0] * 1e9), 0.01, int((now[0] + 0.01) * 1e9))
    now[0] += 0.05
    dec = eng.decide()["origin"]
    assert dec.weights == {"relay1": (70, True), "direct": (30, True)}, dec.reason
    # measurements of both paths decide: one path takes the new flows
    for seq in range(2, 40):
        for path, rtt in (("relay1", 0.010), ("direct", 0.050)):
            eng.probe_result("origin", path, seq, int(now[0] * 1e9), rtt,
                             int((now[0] + rtt) * 1e9))
        now[0] += 0.1
        dec = eng.decide()["origin"]
    assert dec.weights == {"relay1": (100, True), "direct": (0, True)}, dec.reason
