"""Fleet mode's per-stream probe rates (argoctl/fleet/rates.py) and the detection
times that follow a stream's pace (Policy.timing_at, Estimator.pace and its
compiled twin): a slowed stream is neither declared down after 3 missed base
intervals nor kept up forever; a stream sped up gets its new detection time
from the change; passive evidence keeps the base detection time; and which
stream runs at which pace (demand mode on fresh passive evidence, slow checks
vouched for by a fresh composition, full rate the moment either lapses)."""

import pytest

from argoctl import engine as enginemod
from argoctl.config import Policy
from argoctl.estimator import Estimator, State
from argoctl.fleet import rates
from argoctl.pathscore import Tuning
from test_fleet_engine import CFG as CFG1, make_rig, publish

# the edge of test_fleet_engine, with k = 2: every path is in the plan
CFG = CFG1.replace("alternatives = 1", "alternatives = 2")


@pytest.fixture(params=["python", "compiled"])
def paced(request):
    """(policy, one path's estimator): the Python one and its compiled twin."""
    pol = Policy()
    if request.param == "python":
        return pol, Estimator(pol, 0.0)
    if enginemod._pathcore is None:
        pytest.fail("argoctl._pathcore is not built (pip install -e .)")
    return pol, enginemod._pathcore.PathState(pol, Tuning(), 0.0)


def test_timing_at_a_pace_is_the_same_rule_at_that_interval():
    pol = Policy()
    assert pol.timing_at(1) is pol.timing_at(1) and pol.timing_at(1) == pol.timing
    t = pol.timing_at(7)
    assert t.interval_s == 7.0 and t.detect_s == 21.0      # 3 of its own intervals
    # suspect: one of its (jittered) intervals plus a timeout, below detection
    assert t.suspect_after_s == pytest.approx(7.0 * 1.1 + 1.0)
    assert Policy(probe_interval_ms=200).timing_at(5).detect_s == pytest.approx(3.0)


def test_a_slow_stream_is_not_down_after_three_base_intervals_nor_up_forever(paced):
    pol, est = paced
    est.on_reply(1, 0.0, 0.010, 0.010)
    est.pace(7, pol.timing_at(7), 0.010)
    est.tick(3.5)                       # 3 missed 1 s intervals: nothing missed at 7 s
    assert est.state is State.UP
    est.tick(8.0)
    assert est.state is State.UP
    est.tick(8.8)                       # its interval + timeout: the first miss
    assert est.state is State.SUSPECT
    assert est.next_deadline() == pytest.approx(0.010 + 21.0)
    est.tick(20.9)
    assert est.state is State.SUSPECT
    est.tick(21.02)                     # 3 of its intervals: down
    assert est.state is State.DOWN


def test_a_stream_sped_up_gets_its_new_detection_time_from_the_change(paced):
    pol, est = paced
    est.on_reply(1, 0.0, 0.010, 0.010)
    est.pace(10, pol.timing_at(10), 0.010)
    est.tick(8.0)
    assert est.state is State.UP
    est.pace(1, pol.timing_at(1), 8.0)  # 8 s quiet at pace 10: not down at once
    est.tick(8.01)
    assert est.state is State.UP
    assert est.next_deadline() == pytest.approx(8.0 + pol.timing.suspect_after_s)
    est.tick(8.0 + pol.timing.suspect_after_s)
    assert est.state is State.SUSPECT
    est.tick(8.0 + pol.timing.detect_s)  # ... but down a base detection time later
    assert est.state is State.DOWN


def test_unanswered_syns_are_judged_at_the_base_detection_time_whatever_the_pace(paced):
    pol, est = paced
    est.on_reply(1, 0.0, 0.010, 0.010)
    est.pace(10, pol.timing_at(10), 0.010)
    est.on_passive(4, 0, (), 1.0)
    est.tick(1.0 + pol.timing.detect_s - 0.01)
    assert est.state is State.UP
    est.tick(1.0 + pol.timing.detect_s)
    assert est.state is State.SUSPECT and est.snapshot().counts["passive_fail"] == 1


def test_python_and_compiled_agree_on_a_paced_trace():
    pol = Policy()
    if enginemod._pathcore is None:
        pytest.fail("argoctl._pathcore is not built (pip install -e .)")
    ests = [Estimator(pol, 0.0), enginemod._pathcore.PathState(pol, Tuning(), 0.0)]
    seen = []
    for est in ests:
        trace = []
        est.on_reply(1, 0.0, 0.01, 0.01)
        for t, n in ((0.5, 7), (12.0, 1), (12.5, 10), (40.0, 1)):
            est.pace(n, pol.timing_at(n), t)
            for dt in (0.0, 1.0, 2.5, 9.0):
                est.tick(t + dt)
                trace.append((est.state, est.next_deadline()))
        seen.append(trace)
    assert seen[0] == seen[1]


def test_evidence_is_fresh_only_while_handshakes_complete():
    ev = rates.Evidence(1.0)
    assert not ev.fresh("direct", 0.0)
    ev.on_passive("direct", 2, 2, 1.0)
    assert ev.fresh("direct", 2.5) and not ev.failing("direct")
    assert not ev.fresh("direct", 3.5)            # stale: no SYN-ACK for 2 intervals
    ev.on_passive("direct", 4, 3, 4.0)            # a SYN left unanswered: bad
    assert ev.failing("direct") and not ev.fresh("direct", 4.0)
    ev.on_passive("direct", 2, 2, 5.0)
    assert ev.fresh("direct", 5.0) and not ev.failing("direct")


def test_a_look_between_rounds_catches_a_syn_not_yet_answered(rig):
    cfg, eng, agent, clock = rig
    counters = {"direct": (10, 10)}
    read = counters.__getitem__
    assert not agent.handshakes_unanswered(read)       # nothing on demand: no look at all
    rounds(eng, agent, clock, RTTS, 8, syn=(2, 2), legs=UP_LEGS)
    assert agent.pace_of("origin", "direct") == rates.DEMAND_PACE
    assert not agent.handshakes_unanswered(read)       # first look: a baseline
    counters["direct"] = (12, 12)                      # answered between looks
    assert not agent.handshakes_unanswered(read)
    counters["direct"] = (13, 12)                      # a SYN since, unanswered: a round now
    assert agent.handshakes_unanswered(read)
    counters["direct"] = (13, 13)                      # its SYN-ACK came: quiet again
    assert not agent.handshakes_unanswered(read)
    agent.mode = "local"                               # local mode: nothing paced, no looks
    rounds(eng, agent, clock, RTTS, 1, syn=(2, 2))
    counters["direct"] = (20, 13)
    assert not agent.handshakes_unanswered(read)


def test_a_destination_is_idle_only_when_its_traffic_is_counted_and_quiet():
    ev = rates.Evidence(1.0)
    assert not ev.idle("origin", 0.0)             # never counted: unknown, not idle
    ev.on_traffic("origin", 0, 1.0)
    assert ev.idle("origin", 1.0)
    ev.on_traffic("origin", 5, 2.0)
    assert not ev.idle("origin", 4.0)
    assert ev.idle("origin", 4.5)                 # no packet for 2 intervals


def test_check_pace_keeps_published_legs_within_the_ttl():
    assert rates.check_pace(1.0, 15.0) == 7          # measured twice per 15 s TTL
    assert rates.check_pace(0.1, 15.0) == rates.CHECK_PACE
    assert rates.check_pace(1.0, 3.0) == 1


@pytest.fixture(params=["compiled", "python"])
def rig(tmp_path, request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(enginemod, "_pathcore", None)
    return make_rig(tmp_path, CFG)


def rounds(eng, agent, clock, rtts: dict, n: int, syn=None, legs=None, packets=None):
    """n daemon rounds of 1 s: the streams due answer (path -> rtt s; None:
    lost), the passive counters of the choice's path (syn: (sent, acked) or
    None: no handshakes), the datapath's packets to the origin per round
    (packets: None, not counted: local steering), relays' legs published, then
    decide, plan and paces."""
    dec = None
    for _ in range(n):
        if packets is not None:
            agent._packets_sum = getattr(agent, "_packets_sum", 0) + packets
            agent.on_traffic({"origin": agent._packets_sum}, clock.t + 1.0)
        clock.t += 1.0
        for (h, st, r) in legs or ():
            publish(agent, h, st, r, clock.t)
        for path, rtt in rtts.items():
            if ("origin", path) not in agent.probed:
                continue
            seq = int(clock.t * 10)
            est = eng.path("origin", path)
            if rtt is None:
                est.on_timeout(seq, clock.t)
            else:
                est.on_reply(seq, clock.t - rtt, rtt, clock.t)
        last = eng.last("origin")           # traffic goes where the maps point
        if syn is not None and last is not None:
            agent.on_passive(last.choice, syn[0], syn[1], clock.t)
        dec = eng.decide_one("origin", clock.t)
        # FleetAgent.round without its mode update (no bus here: the mode is set)
        agent.learn({"origin": dec}, clock.t)
        agent.apply_plan(agent.plan({"origin": dec}, clock.t), clock.t)
        agent.apply_paces({"origin": dec}, clock.t)
    return dec


UP_LEGS = (("relay1", "up", 30.0), ("relay2", "up", 25.0))
RTTS = {"direct": 0.010, "relay1": 0.031, "relay2": 0.026}


def test_a_choice_carrying_real_traffic_is_probed_on_demand_only(rig):
    cfg, eng, agent, clock = rig
    dec = rounds(eng, agent, clock, RTTS, 8, syn=(2, 2), legs=UP_LEGS)
    assert dec.choice == "direct"
    assert agent.pace_of("origin", "direct") == rates.DEMAND_PACE
    # the alternatives, vouched for by their relays' fresh legs, are checked slowly
    assert agent.pace_of("origin", "relay2") == agent.check_pace == 7
    assert agent.pace_of("origin", "relay1") == 7
    # and their detection times follow (the engine's estimators are paced)
    assert eng.path("origin", "direct").snapshot().state is State.UP
    assert eng.path("origin", "relay2").detect == 21.0


def test_traffic_without_handshakes_keeps_the_choice_at_the_full_rate(rig):
    cfg, eng, agent, clock = rig
    # UDP only through the datapath, or traffic not counted (local steering)
    for packets in (None, 50):      # (counted from the second on)
        dec = rounds(eng, agent, clock, RTTS, 8, syn=None, legs=UP_LEGS, packets=packets)
        assert dec.choice == "direct"
        assert agent.pace_of("origin", "direct") == 1
        assert agent.pace_of("origin", "relay2") == 7


def test_an_idle_destination_has_its_choice_checked_and_traffic_ends_that(rig):
    cfg, eng, agent, clock = rig
    dec = rounds(eng, agent, clock, RTTS, 8, syn=None, legs=UP_LEGS, packets=0)
    assert dec.choice == "direct"
    # nothing to protect here: the choice feeds only the published leg
    assert agent.pace_of("origin", "direct") == agent.check_pace == 7
    assert eng.path("origin", "direct").detect == 21.0
    polls = agent.polls
    # the first packets: full rate at the next round, with a poll
    rounds(eng, agent, clock, RTTS, 1, syn=None, legs=UP_LEGS, packets=3)
    assert agent.pace_of("origin", "direct") == 1 and agent.polls > polls
    assert eng.path("origin", "direct").detect == 3.0
    # quiet again for more than FRESH_INTERVALS: checked again
    rounds(eng, agent, clock, RTTS, 3, syn=None, legs=UP_LEGS, packets=0)
    assert agent.pace_of("origin", "direct") == 7


def test_an_idle_destination_whose_choice_is_lost_is_verified_at_the_full_rate(rig):
    cfg, eng, agent, clock = rig
    rounds(eng, agent, clock, RTTS, 8, syn=None, legs=UP_LEGS, packets=0)
    assert agent.pace_of("origin", "direct") == 7
    dead = dict(RTTS, direct=None)
    for _ in range(12):
        dec = rounds(eng, agent, clock, dead, 1, syn=None, legs=UP_LEGS, packets=0)
        if dec.scores["direct"].state is not State.UP:
            break
    # the missed check makes it suspect: verified at the full rate from then on,
    # so it is down (and published so) a base detection time later, not 3 checks
    assert dec.scores["direct"].state is State.SUSPECT
    assert agent.pace_of("origin", "direct") == 1, agent.paces
    since = clock.t
    while dec.scores["direct"].state is not State.DOWN and clock.t < since + 10:
        dec = rounds(eng, agent, clock, dead, 1, syn=None, legs=UP_LEGS, packets=0)
    assert dec.scores["direct"].state is State.DOWN and clock.t - since <= 3.0


def test_an_unanswered_syn_puts_every_path_back_to_full_rate_at_once(rig):
    cfg, eng, agent, clock = rig
    rounds(eng, agent, clock, RTTS, 8, syn=(2, 2), legs=UP_LEGS)
    polls = agent.polls
    rounds(eng, agent, clock, RTTS, 1, syn=(2, 0), legs=UP_LEGS)
    assert {agent.pace_of("origin", p) for p in ("direct", "relay1", "relay2")} == {1}
    assert agent.probed == {("origin", p) for p in ("direct", "relay1", "relay2")}
    assert agent.polls > polls
    assert eng.path("origin", "direct").detect == 3.0
    # handshakes complete again: demand mode and slow checks come back
    rounds(eng, agent, clock, RTTS, 2, syn=(2, 2), legs=UP_LEGS)
    assert agent.pace_of("origin", "direct") == rates.DEMAND_PACE


def test_an_alternative_whose_relay_reports_its_leg_down_is_verified_at_full_rate(rig):
    cfg, eng, agent, clock = rig
    rounds(eng, agent, clock, RTTS, 8, syn=(2, 2), legs=UP_LEGS)
    assert agent.pace_of("origin", "relay2") == 7
    rounds(eng, agent, clock, RTTS, 1, syn=(2, 2),
           legs=(("relay1", "up", 30.0), ("relay2", "down", None)))
    assert agent.pace_of("origin", "relay2") == 1
    assert agent.pace_of("origin", "direct") == rates.DEMAND_PACE


def test_a_path_about_to_be_chosen_is_verified_at_full_rate(rig):
    cfg, eng, agent, clock = rig
    rtts = {"direct": 0.050, "relay1": 0.031, "relay2": 0.060}
    legs = (("relay1", "up", 30.0), ("relay2", "up", 59.0))
    dec = rounds(eng, agent, clock, rtts, 3, syn=(2, 2), legs=legs)
    assert dec.choice == "direct"
    # relay1 measures 19 ms better than the choice: above the switch margins
    assert agent.pace_of("origin", "relay1") == 1
    assert agent.pace_of("origin", "relay2") == 7
    for _ in range(10):
        dec = rounds(eng, agent, clock, rtts, 1, syn=(2, 2), legs=legs)
        if dec.choice != "direct":
            break
        assert agent.pace_of("origin", "relay1") == 1     # verified at full rate throughout
    assert dec.choice == "relay1" and dec.reason.startswith("switch direct -> relay1")


def test_a_choice_slow_once_does_not_make_an_alternative_about_to_be_chosen(rig):
    cfg, eng, agent, clock = rig
    rtts = {"direct": 0.040, "relay1": 0.031, "relay2": 0.026}
    legs = (("relay1", "up", 30.0), ("relay2", "up", 25.0))
    dec = rounds(eng, agent, clock, rtts, 3, syn=(2, 2), legs=legs)
    assert dec.choice == "direct"
    # direct answers fast again: its raw score is back, its smoothed one still
    # high (one sample an interval here; on demand, one per 10 intervals)
    dec = rounds(eng, agent, clock, dict(rtts, direct=0.010), 1, syn=(2, 2), legs=legs)
    s = dec.scores
    assert s["direct"].smoothed_ms - s["relay2"].smoothed_ms >= 5.0
    assert s["direct"].raw_ms < s["relay2"].raw_ms
    # the engine does not switch for that, so relay2 is not verified at full rate
    assert dec.choice == "direct" and agent.pace_of("origin", "relay2") == 7


def test_local_mode_probes_every_stream_at_the_full_rate(rig):
    cfg, eng, agent, clock = rig
    rounds(eng, agent, clock, RTTS, 8, syn=(2, 2), legs=UP_LEGS)
    assert agent.paces and agent.peer_paces == {}
    agent.mode = "local"
    rounds(eng, agent, clock, RTTS, 1, syn=(2, 2))
    assert agent.paces == {} and agent.peer_paces == {}
    assert eng.path("origin", "direct").detect == 3.0


def test_tunnel_legs_are_checked_slowly_while_up(rig):
    cfg, eng, agent, clock = rig
    for i in range(3):
        agent.on_peer_result("relay1", i, int(i * 1e9), 0.002, int((i + 0.002) * 1e9))
    rounds(eng, agent, clock, RTTS, 1, syn=(2, 2), legs=UP_LEGS)
    assert agent.peer_paces == {"relay1": 7}            # relay2: never answered
    assert agent.peer_est["relay1"].detect == 21.0
