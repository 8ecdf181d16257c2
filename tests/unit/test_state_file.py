"""The daemon's state file is written as text built directly (Daemon.state_text),
not through json.dumps of Daemon.state_doc(): it must be the same bytes, whatever
the paths went through. A real config (through the loader) and a real engine fed
probe results, no kernel."""

from __future__ import annotations

import json
import time

import pytest

from argoctl import daemon as dmn
from argoctl import explain, mac
from argoctl.bench.control import control_config
from argoctl.engine import Engine


@pytest.fixture
def dmon(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1.7e9 + 0.123456)   # both builders' clock
    key = str(tmp_path / "probe.key")
    mac.write_key(key)
    cfg = control_config(str(tmp_path), key, dests=12, paths=4, interval_ms=100, targets=6)
    now = [50.0]
    d = dmn.Daemon(cfg, dmn.Options(run_dir=str(tmp_path / "run")), clock=lambda: now[0])
    d.engine = Engine.from_config(cfg, clock=lambda: now[0])
    for i, dest in enumerate(cfg.destinations):
        d.written[dest.name] = dmn.initial_weights(cfg, dest)
        d.adopted[dest.name] = i % 2 == 0
    return d, now


def _same(d, running=True):
    text = d.state_text(running)
    assert text == json.dumps(d.state_doc(running), sort_keys=True, separators=(",", ":"))
    return text


def test_state_text_is_the_json_of_state_doc_through_every_path_state(dmon, tmp_path):
    d, now = dmon
    eng = d.engine
    names = list(d.dests)
    docs = [json.loads(_same(d))]             # before any decision: adopted / no decision yet
    for seq in range(1, 400):
        t = now[0]
        for i, name in enumerate(names):
            if i % 6 == 5 and seq < 300:
                continue                      # (one probe target) unmeasured until late: nulls
            for j, path in enumerate(d.dests[name].paths):
                # relay1 of some destinations flaps (penalty, suppression), then
                # recovers (hold-down); relay2 gains on direct (switches)
                dead = path == "relay1" and i % 3 == 0 and (seq // 15) % 2 == 1 and seq < 200
                rtt = None if dead else (0.020 + 0.003 * j + 0.0001 * ((seq * 7 + i) % 13)
                                         - (0.00006 * seq if path == "relay2" else 0))
                eng.probe_result(name, path, seq, int(t * 1e9), rtt,
                                 int((t + (rtt if rtt is not None else 0.3)) * 1e9))
        now[0] += 0.1
        decided = eng.decide() if seq % 2 else {n: eng.decide_one(n) for n in names[::3]}
        for name, dec in decided.items():
            if dec.choice != dmn.choice_of(d.dests[name].paths, d.written[name]):
                d.switches[name] += 1
                d.chosen_since[name] = dec.at
            d.written[name] = dec.weights
        if seq % 10 == 0:
            docs.append(json.loads(_same(d, running=seq % 20 == 0)))
    docs.append(json.loads(_same(d)))
    # the trace reached what the text has to spell out
    entries = [e for doc in docs for e in doc["destinations"].values()]
    paths = [p for e in entries for p in e["paths"].values()]
    assert {e["reason"] for e in entries} >= {"no decision yet",
                                              "adopted from the running datapath"}
    assert any(e["choice"] == "relay2" and e["since"] for e in entries)
    assert {p["state"] for p in paths} >= {"up", "down", "unknown"}
    assert {p["tier"] for p in paths} >= {"usable", "held"}
    assert any(p["score_ms"] is None for p in paths) and any(not p["up"] for p in paths)
    assert any(p["held_for_s"] is not None for p in paths)
    assert any(p["suppressed"] for p in paths) and any(p["loss"] > 0 for p in paths)
    # every one of them passes the readers' check (statefile._check_state)
    from argoctl.statefile import _check_state
    assert [_check_state(doc) for doc in docs] == [None] * len(docs)
    # what `argoctl explain` reads back
    dmn.write_state_text(d.state_file, d.state_text())
    loaded = explain.load(d.run_dir)
    assert loaded["destinations"] == d.state_doc()["destinations"]


def test_unusual_values_fall_back_to_the_json_encoder(dmon):
    d, now = dmon
    name = next(iter(d.dests))
    paths = d.dests[name].paths
    d.written[name] = {p: (100 if p == paths[0] else 0, True) for p in paths}
    d.engine.probe_result(name, paths[0], 1, int(now[0] * 1e9), float("inf"),
                          int(now[0] * 1e9))
    now[0] += 0.1
    d.engine.decide()
    text = _same(d)
    assert "Infinity" in text
