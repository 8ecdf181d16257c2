"""Shipped lab scenarios load, and a broken scenario file is refused with where and why."""

from __future__ import annotations

import pytest

from argoctl.lab import scenario as lab


def test_every_shipped_scenario_loads_with_ordered_steps_inside_its_duration():
    names = lab.scenario_names()
    assert {"outage", "brownout", "flapping", "relay-failure"} <= set(names)
    for name in names:
        sc = lab.load_scenario(name)
        assert sc.steps and sc.description
        assert [s.at for s in sc.steps] == sorted(s.at for s in sc.steps)
        assert all(0 <= s.at <= sc.duration for s in sc.steps)
        # every link a scenario breaks, it also restores
        broken = {(s.a, s.b) for s in sc.steps if not s.clear}
        assert broken <= {(s.a, s.b) for s in sc.steps if s.clear}, name


def test_brownout_ramps_latency_then_loss():
    steps = [s for s in lab.load_scenario("brownout").steps if not s.clear]
    assert [s.delay for s in steps] == sorted(s.delay for s in steps)
    assert steps[-1].loss > 0 and steps[0].loss == 0


@pytest.mark.parametrize("step, message", [
    ({"at": 1, "link": ["edge", "nowhere"]}, "link must name two linked lab hosts"),
    ({"at": 99, "link": ["edge", "origin"]}, "within the duration"),
    ({"at": 1, "link": ["edge", "origin"], "dleay": 5}, "unknown key(s) dleay"),
    ({"at": 1, "link": ["edge", "origin"], "jitter": 5}, "jitter needs delay"),
    ({"at": 1, "link": ["edge", "origin"], "direction": "up"}, "direction must be one of"),
    ({"at": 1, "link": ["edge", "origin"], "loss": 150}, "loss within 0..100"),
])
def test_bad_step_is_refused_with_its_number(step, message):
    with pytest.raises(ValueError) as e:
        lab.parse_scenario({"duration": 10, "step": [{"at": 0, "link": ["edge", "relay1"]},
                                                     step]}, "x.toml")
    assert "x.toml: step 2" in str(e.value) and message in str(e.value)


def test_unknown_scenario_names_the_shipped_ones():
    with pytest.raises(ValueError, match="shipped: .*outage"):
        lab.load_scenario("no-such-scenario")


def test_step_descriptions_read_as_what_happens():
    s = lab.Step(1, "edge", "origin", "a->b", delay=100, jitter=5, loss=2)
    assert s.describe() == "edge->origin +100 ms +-5, 2% loss"
    assert lab.Step(1, "edge", "origin", blackhole=True).describe() == "edge<->origin blackholed"


def test_only_the_fleet_scenario_asks_for_fleet_mode():
    assert {n for n in lab.scenario_names() if lab.load_scenario(n).fleet} == {"fleet"}
    fleet = lab.load_scenario("fleet")
    # it leaves relay2 as the one host that reaches the origin
    broken = {(s.a, s.b) for s in fleet.steps if s.blackhole}
    assert broken == {("edge", "origin"), ("relay1", "origin")}


@pytest.mark.parametrize("doc, message", [
    ({"duration": 10, "fleet": "yes"}, "fleet must be true or false"),
    ({"duration": 10, "fleeet": True}, "unknown key(s) fleeet"),
])
def test_bad_scenario_keys_are_refused(doc, message):
    with pytest.raises(ValueError) as e:
        lab.parse_scenario(doc, "x.toml")
    assert str(e.value).startswith("x.toml: ") and message in str(e.value)
