"""The engine with fleet mode's estimates (argoctl/fleet/agent.py overlay and plan):
Orpheus across the fleet, make-before-break against unverified paths, which
paths are probed, and nothing older than the TTL. Deterministic clocks; the
bus itself is tested against a real nats-server in tests/netns/test_fleet_bus.py."""

import pytest

from argoctl import config
from argoctl import engine as enginemod
from argoctl.engine import Engine
from argoctl.fleet import schema
from argoctl.fleet.agent import FleetAgent
from argoctl.fleet.schema import Leg

WALL0 = 1_764_691_200.0
PROBE = "udp:203.0.113.10:7447"
CFG = '''[node]
name = "edge"
address = "192.0.2.1"
tunnel_address = "198.51.100.1"

[[peer]]
name = "relay1"
address = "192.0.2.2"
tunnel = "gre"
tunnel_address = "198.51.100.2"

[[peer]]
name = "relay2"
address = "192.0.2.3"
tunnel = "gre"
tunnel_address = "198.51.100.3"

[[destination]]
name = "origin"
prefixes = ["203.0.113.0/24"]
paths = ["direct", "relay1", "relay2"]
probe = { kind = "icmp", target = "203.0.113.10" }

[policy]
hold_down_s = 5.0

[fleet]
servers = ["nats://127.0.0.1:4222"]
alternatives = 1
ttl_s = 15
'''
PROBE = "icmp:203.0.113.10:0"


@pytest.fixture(autouse=True, params=["compiled", "python"])
def impl(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(enginemod, "_pathcore", None)
    return request.param


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def rig(tmp_path):
    return make_rig(tmp_path, CFG)


def make_rig(tmp_path, text: str):
    """(config, engine, agent in fleet mode, clock) for the edge of `text`."""
    f = tmp_path / "edge.toml"
    f.write_text(text)
    cfg = config.load(str(f))
    clock = Clock()
    eng = Engine.from_config(cfg, clock=clock)
    agent = FleetAgent(cfg, eng, clock=clock, wall=lambda: WALL0 + clock.t)
    eng.overlay = agent.overlay
    agent.mode = "fleet"        # as if the bus were healthy (bus.py's tests: a real server)
    return cfg, eng, agent, clock


def publish(agent, host, state, rtt, t):
    """`host` publishes its direct leg to origin, measured at t."""
    leg = Leg(state, rtt, 0.2, 0.0 if state == "up" else 1.0, WALL0 + t, PROBE, (0, 0))
    agent.view.ingest_legs(f"{host}.d.0", schema.direct_value(host, 0, 1, {"origin": leg},
                                                             WALL0 + t), WALL0 + t)


def step(eng, agent, clock, replies: dict, seq: int):
    """One probe round: replies (path -> rtt s, None = lost) to the paths probed,
    then a decision and the plan."""
    clock.t += 0.5
    for path, rtt in replies.items():
        if ("origin", path) not in agent.probed:
            continue
        est = eng.path("origin", path)
        sent = clock.t - 0.5
        if rtt is None:
            est.on_timeout(seq, clock.t)
        else:
            est.on_reply(seq, sent, rtt, sent + rtt)
    clock.t += 0.5
    dec = eng.decide_one("origin", clock.t)
    agent.apply_plan(agent.plan({"origin": dec}, clock.t), clock.t)
    return dec


def test_orpheus_a_relay_that_reaches_the_origin_takes_traffic_before_we_probed_it(rig):
    cfg, eng, agent, clock = rig
    publish(agent, "relay1", "down", None, 0)
    publish(agent, "relay2", "up", 20.0, 0)
    for i in range(8):
        dec = step(eng, agent, clock, {"direct": 0.010}, i)
    assert dec.choice == "direct"
    # k = 1: direct (the choice, our own leg) and the better alternative, relay2;
    # relay1, which its relay says is down, is not probed end to end
    assert agent.probed == {("origin", "direct"), ("origin", "relay2")}
    assert dec.scores["relay1"].tier_name == "down"
    assert dec.scores["relay2"].tier_name == "unknown"
    assert dec.scores["relay2"].smoothed_ms == pytest.approx(20.2)
    # the direct path dies; relay2 has still not been probed when it is chosen
    for i in range(8, 20):
        dec = step(eng, agent, clock, {"direct": None}, i)
        if dec.choice != "direct":
            break
    assert dec.choice == "relay2", dec.reason
    assert "failover direct -> relay2" in dec.reason
    assert eng.path("origin", "relay2").snapshot().counts["replies"] == 0
    assert dec.weights["direct"] == (0, False) and dec.weights["relay2"][0] == 100
    # relay1, unprobed here and down by its relay's word, is marked down in the
    # datapath too: a flow pinned to it moves (our estimator never sees it fail)
    assert dec.weights["relay1"] == (0, False)


def test_an_unverified_path_never_displaces_a_working_one(rig):
    cfg, eng, agent, clock = rig
    publish(agent, "relay2", "up", 5.0, 0)          # much faster than direct, on paper
    for i in range(30):
        publish(agent, "relay2", "up", 5.0, clock.t)
        dec = step(eng, agent, clock, {"direct": 0.050}, i)
        assert dec.choice == "direct", dec.reason
    assert ("origin", "relay2") in agent.probed     # so the plan verifies it ...
    for i in range(30, 60):
        publish(agent, "relay2", "up", 5.0, clock.t)
        dec = step(eng, agent, clock, {"direct": 0.050, "relay2": 0.008}, i)
        if dec.choice == "relay2":
            break
    # ... and once measured end to end it wins on score, with the usual hysteresis
    assert dec.choice == "relay2" and dec.reason.startswith("switch direct -> relay2")
    assert dec.scores["relay2"].state.value == "up"


def test_the_plan_probes_the_choice_direct_and_k_alternatives_and_all_in_local_mode(rig):
    cfg, eng, agent, clock = rig
    publish(agent, "relay1", "up", 30.0, 0)
    publish(agent, "relay2", "up", 25.0, 0)
    for i in range(5):
        step(eng, agent, clock, {"direct": 0.010}, i)
    assert agent.probed == {("origin", "direct"), ("origin", "relay2")}
    restarts = agent.restarts
    agent.mode = "local"
    step(eng, agent, clock, {"direct": 0.010}, 5)
    assert agent.probed == {("origin", p) for p in ("direct", "relay1", "relay2")}
    assert agent.restarts == restarts + 1               # relay1 starts afresh
    dec = step(eng, agent, clock, {"direct": 0.010, "relay1": 0.03, "relay2": 0.03}, 6)
    assert all(s.snapshot.counts is not None for s in dec.scores.values())
    assert eng.path("origin", "relay1").snapshot().counts["downs"] == 0


def test_no_decision_uses_a_leg_older_than_the_ttl(rig):
    cfg, eng, agent, clock = rig
    publish(agent, "relay1", "up", 30.0, 0)
    publish(agent, "relay2", "up", 25.0, 0)
    for i in range(5):
        dec = step(eng, agent, clock, {"direct": 0.010}, i)
    assert dec.scores["relay1"].smoothed_ms is not None or ("origin", "relay1") in agent.probed
    clock.t = 15.5                    # both legs measured at 0: now too old
    dec = step(eng, agent, clock, {"direct": 0.010}, 6)
    for p in ("relay1", "relay2"):
        s = dec.scores[p]
        assert s.smoothed_ms is None and s.tier_name == "unknown"
    # nothing known about them any more: both are probed end to end again
    assert agent.probed == {("origin", p) for p in ("direct", "relay1", "relay2")}


@pytest.mark.parametrize("relay1_says", ["up", "down"])
def test_a_failover_waits_for_an_answer_from_a_path_last_heard_from_long_ago(rig, relay1_says):
    """The choice (direct) fails, and so, by the same fault, does relay1, which
    was checked slowly (pace 7) and last answered 5 s ago; relay2 reports the
    origin up. Traffic does not go to relay1 on its old answer: relay1 ranks as
    unverified (down once relay1 published, after that answer, that it lost the
    origin), and traffic goes to relay2 as soon as relay2 answers."""
    cfg, eng, agent, clock = rig
    publish(agent, "relay1", "up", 20.0, 0)
    publish(agent, "relay2", "up", 20.0, 0)
    for i in range(6):
        dec = step(eng, agent, clock, {"direct": 0.010, "relay1": 0.020}, i)
    assert agent.probed == {("origin", "direct"), ("origin", "relay1")}
    assert dec.scores["relay1"].tier_name == "usable"
    eng.pace("origin", "relay1", 7, clock.t)        # checked slowly from now on
    for i in range(6, 11):
        publish(agent, "relay2", "up", 20.0, clock.t)
        dec = step(eng, agent, clock, {"direct": 0.010}, i)
    # while the choice works, a slow check's old answer is good enough: latency
    # moves are decided as before
    assert dec.choice == "direct" and dec.scores["relay1"].tier_name == "usable"
    assert agent.unverified == 0
    publish(agent, "relay1", relay1_says, 20.0 if relay1_says == "up" else None, clock.t)
    dec = step(eng, agent, clock, {"direct": None}, 11)     # relay1's poll: not yet
    assert dec.scores["direct"].state.value == "suspect"
    assert dec.choice == "direct", dec.reason               # nothing verified to go to
    assert dec.scores["relay1"].tier_name == ("unknown" if relay1_says == "up" else "down")
    assert ("origin", "relay2") in agent.probed             # verified now, at once
    choices = []
    for i in range(12, 16):
        dec = step(eng, agent, clock, {"direct": None, "relay1": None, "relay2": 0.020}, i)
        choices.append(dec.choice)
    assert choices[0] == "relay2" and "relay1" not in choices, choices


def test_a_leg_that_goes_down_long_after_its_last_reply_is_published_fresh(rig):
    """A host whose direct leg dies is heard saying so for a TTL, however long it
    was silent before the verdict (an idle relay checks its leg seldom)."""
    cfg, eng, agent, clock = rig
    for i in range(5):
        step(eng, agent, clock, {"direct": 0.010}, i)
    up, _ = agent.own_legs(clock.t, WALL0 + clock.t)
    assert up["origin"].state == "up" and up["origin"].at <= WALL0 + clock.t
    i = 5
    while clock.t < 25.0:                   # silent for longer than the 15 s TTL
        step(eng, agent, clock, {"direct": None}, i)
        i += 1
    wall = WALL0 + clock.t
    legs, _ = agent.own_legs(clock.t, wall)
    leg = legs["origin"]
    assert leg.state == "down"
    assert agent.view.fresh(leg, wall + 1.0) is leg    # readers see it for a TTL
