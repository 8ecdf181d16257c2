"""Engine decisions on deterministic traces (replayed by tests/unit/traces.py).
Every test runs twice: with the compiled path states (argoctl/_pathcore.c, the
default) and with the pure-Python estimator and score."""

import dataclasses
import random

import pytest

from argoctl import engine as enginemod
from argoctl.config import Policy
from argoctl.engine import Engine
from argoctl.estimator import State

from traces import choices, first_time, replay, series, switches

POLICY = Policy(probe_interval_ms=1000, probe_timeout_ms=1000, probe_jitter=0.1,
                detect_multiplier=3, recover_probes=5, hold_down_s=30.0,
                switch_relative=0.10, switch_absolute_ms=5.0, loss_window=20,
                rtt_alpha=0.125)
PATHS = ("direct", "r1")


@pytest.fixture(autouse=True, params=["compiled", "python"])
def impl(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(enginemod, "_pathcore", None)
    else:
        assert enginemod._pathcore is not None, "argoctl._pathcore is not built (pip install -e .)"
    return request.param


def engine(paths=PATHS, **policy) -> Engine:
    return Engine(dataclasses.replace(POLICY, **policy), [("d", paths)], clock=lambda: 0.0)


def run(eng: Engine, **trace_by_path):
    return replay(eng, "d", trace_by_path)


# -- hysteresis -------------------------------------------------------------

@pytest.mark.parametrize("direct_ms, r1_ms", [(100, 100), (100, 96)])
def test_no_switch_under_20_percent_noise_over_10000_rounds(direct_ms, r1_ms):
    n = 10_000
    steps = run(engine(),
                direct=series(n, direct_ms, noise=0.2, seed=1),
                r1=series(n, r1_ms, noise=0.2, seed=2))
    assert len(steps) == n
    assert switches(steps) == []
    assert set(choices(steps)) == {"direct"}
    assert sum(s.decision.changed for s in steps) == 1      # only the first decision


def test_without_the_margins_the_same_noise_would_switch():
    # The trace above is not too easy: with zero margins and no dwell the
    # engine flips between the two paths many times.
    from argoctl.engine import Tuning
    eng = Engine(dataclasses.replace(POLICY, switch_relative=0.0, switch_absolute_ms=0.0,
                                     hold_down_s=0.0),
                 [("d", PATHS)], clock=lambda: 0.0, tuning=Tuning(dwell=0))
    n = 10_000
    steps = run(eng, direct=series(n, 100, noise=0.2, seed=1), r1=series(n, 96, noise=0.2, seed=2))
    assert len(switches(steps)) > 10


def test_switch_after_a_sustained_100ms_increase_but_not_after_a_spike():
    n, at = 400, 200
    steps = run(engine(),
                direct=series(n, 100, noise=0.2, seed=3, steps=[(at, 100)]),
                r1=series(n, 120, noise=0.2, seed=4))
    sw = switches(steps)
    assert len(sw) == 1
    when, frm, to = sw[0]
    assert (frm, to) == ("direct", "r1")
    assert at + 5 < when <= at + 15       # level shift (5 probes) + dwell (5 intervals)
    assert "better by" in steps[[s.now for s in steps].index(when)].decision.reason

    spiky = run(engine(),
                direct=series(n, 100, noise=0.2, seed=3, spikes=[(at, 100), (at + 50, 400)]),
                r1=series(n, 120, noise=0.2, seed=4))
    assert switches(spiky) == []


# -- failures ---------------------------------------------------------------

def test_failover_within_detect_multiplier_intervals_when_replies_stop():
    interval, n, stop = 0.1, 200, 100          # 100 ms probes, multiplier 3
    eng = engine(probe_interval_ms=100, probe_timeout_ms=100)
    steps = replay(eng, "d", {"direct": series(n, 5, outages=[(stop, n)]),
                              "r1": series(n, 20)}, decide_every=interval / 20)
    last_reply = (stop - 1) * interval + 0.005
    detect = last_reply + 3 * interval
    # The verdict: direct is marked down (its flows move) at the first
    # decision at or after the detection time, and not before it.
    down_at = first_time(steps, lambda d: not d.weights["direct"][1])
    assert detect <= down_at < detect + interval / 20 + 1e-9
    dec = next(s.decision for s in steps if s.now == down_at)
    assert dec.choice == "r1" and dec.scores["direct"].state is State.DOWN
    # New flows left no later than the verdict, but not before the first
    # miss (the first lost probe's timeout): make-before-break, not a guess.
    moved = first_time(steps, lambda d: d.choice == "r1")
    first_miss = stop * interval + 0.1
    assert first_miss - 1e-9 <= moved < first_miss + interval / 20 + 1e-9
    assert moved < down_at
    assert set(choices([s for s in steps if s.now < moved])) == {"direct"}


def test_return_after_recovery_only_once_hold_down_has_passed():
    n = 200
    eng = engine()
    steps = run(eng, direct=series(n, 50, outages=[(50, 60)]), r1=series(n, 100))
    recovered = eng.path("d", "direct").recovered_at
    assert recovered == pytest.approx(64.05)       # 5 probes after the outage
    hold_end = recovered + POLICY.hold_down_s
    back = [s for s in steps if s.now >= 55]
    # Not before: r1 carries new flows until the hold-down ends...
    assert {s.decision.choice for s in back if s.now < hold_end} == {"r1"}
    held = next(s.decision for s in back if recovered < s.now < hold_end)
    assert held.scores["direct"].tier_name == "held" and "held" in held.explain()
    # ...yes after: direct (half the RTT) comes back within the dwell.
    returned = first_time(steps, lambda d: d.choice == "direct", after=hold_end)
    assert returned is not None and returned <= hold_end + 7
    assert switches(steps)[-1] == (returned, "r1", "direct")


def test_a_down_path_is_never_chosen_while_another_is_up():
    paths = ("direct", "r1", "r2")
    checked = 0
    for seed in range(30):
        rng = random.Random(seed)
        n = 300
        tr = {}
        for i, p in enumerate(paths):
            outages = []
            for _ in range(rng.randint(0, 4)):
                a = rng.randrange(n)
                outages.append((a, a + rng.randint(1, 40)))
            tr[p] = series(n, rng.uniform(10, 200), noise=rng.choice([0, 0.1, 0.3]),
                           seed=seed * 10 + i, loss=rng.choice([0, 0.02, 0.2]),
                           steps=[(rng.randrange(n), rng.uniform(-50, 150))], outages=outages)
        pol = dict(hold_down_s=rng.choice([0, 5, 30]), recover_probes=rng.choice([1, 3, 5]),
                   split=rng.random() < 0.3)
        eng = Engine(dataclasses.replace(POLICY, **pol), [("d", paths)], clock=lambda: 0.0)
        for s in replay(eng, "d", tr, decide_every=0.5):
            dec = s.decision
            states = {p: dec.scores[p].state for p in paths}
            assert dec.weights[dec.choice][1], "the choice is always up in the datapath"
            assert sum(w for w, _ in dec.weights.values()) == 100
            for p, (w, up) in dec.weights.items():
                assert not (w and not up)
                if w:
                    assert states[p] is not State.DOWN or all(
                        st is State.DOWN for st in states.values())
            if s.now < 3.0:
                continue       # start-up grace: direct gets its first round trip
            if any(st is State.UP for st in states.values()):
                assert states[dec.choice] is State.UP, (seed, s.now, dec.explain())
                checked += 1
    assert checked > 5_000


def test_all_paths_down_keeps_the_last_good_choice_up():
    n = 200
    eng = engine(hold_down_s=5)
    steps = run(eng, direct=series(n, 20, outages=[(30, 150)]), r1=series(n, 50, outages=[(80, n)]))
    # direct failed first: r1 became the (last good) choice; then r1 failed too.
    both_down = [s.decision for s in steps if 90 < s.now < 150]
    assert both_down and all(d.choice == "r1" for d in both_down)
    for d in both_down:
        assert d.weights == {"direct": (0, False), "r1": (100, True)}
        assert "all paths down" in d.reason
    assert sum(d.changed for d in both_down) <= 1
    # When direct comes back it is used at once, hold-down or not: it is the
    # only path that reaches (Orpheus).
    back = first_time(steps, lambda d: d.choice == "direct", after=150)
    assert back is not None and back <= 156
    dec = next(s.decision for s in steps if s.now == back)
    assert dec.scores["direct"].held_until is not None


def test_no_measurements_yet_means_direct_or_the_first_path():
    d = engine().decide(now=0.0)["d"]
    assert d.choice == "direct" and d.weights == {"direct": (100, True), "r1": (0, True)}
    assert "no measurements" in d.reason and d.changed
    d = engine(paths=("r2", "r1")).decide(now=0.0)["d"]
    assert d.choice == "r2"


# -- make-before-break, damping, split ------------------------------------------

def test_make_before_break_moves_new_flows_but_keeps_the_suspect_path_up():
    n = 120
    eng = engine()
    steps = run(eng, direct=series(n, 30, outages=[(60, 61)]), r1=series(n, 60))
    suspect = [s.decision for s in steps if s.decision.scores["direct"].state is State.SUSPECT]
    assert suspect
    assert "make-before-break" in suspect[0].reason
    for d in suspect:
        assert d.choice == "r1"
        assert d.weights == {"direct": (0, True), "r1": (100, True)}   # pinned flows stay
    # One lost probe never marked direct down, and as soon as it was up again
    # (recover_probes replies later) new flows went back to it, no dwell.
    assert all(s.decision.weights["direct"][1] for s in steps)
    sw = switches(steps)
    assert [(f, t) for _, f, t in sw] == [("direct", "r1"), ("r1", "direct")]
    up_again = first_time(steps, lambda d: d.scores["direct"].state is State.UP, after=sw[0][0])
    assert sw[1][0] == up_again
    assert "before the verdict" in next(s.decision for s in steps if s.now == up_again).reason


def test_a_path_that_keeps_doubting_is_left_after_its_second_return_not_bounced():
    # direct: 30 ms but one probe in 6 lost for 100 s (suspect, then up again
    # after recover_probes replies, never down); r1: 60 ms, clean. Make-before-
    # break alone would send new flows away and back every 6 s (as `make demo`'s
    # brownout once did, 25 switches in 10 s).
    n, lossy_until = 300, 140
    outages = [(t, t + 1) for t in range(40, lossy_until, 6)]
    steps = run(engine(), direct=series(n, 30, outages=outages), r1=series(n, 60))
    sw = switches(steps)
    # the first doubt: away and back at once; doubting again within a hold-down
    # (30 s) of that return: away, and it stays away
    assert [(f, t) for _, f, t in sw[:3]] == [("direct", "r1"), ("r1", "direct"), ("direct", "r1")]
    assert all(d.scores["direct"].state is not State.DOWN for d in (s.decision for s in steps))
    # back only once direct is clean and better for a whole hold-down
    assert [(f, t) for _, f, t in sw[3:]] == [("r1", "direct")]
    back_at = sw[3][0]
    assert back_at >= lossy_until + 30
    back = next(s.decision for s in steps if s.now == back_at)
    assert "hold-down: in doubt again" in back.reason, back.reason


def test_flapping_path_is_suppressed_and_a_stable_one_never_is():
    # direct: 20 ms but dead for 5 s out of every 15 for 3 minutes, then
    # stable. r1: 200 ms, stable. Hold-down 0 so only damping keeps direct out.
    flapping_until, n = 180, 600
    outages = [(t, t + 5) for t in range(10, flapping_until, 15)]
    eng = engine(hold_down_s=0, recover_probes=2)
    steps = run(eng, direct=series(n, 20, outages=outages), r1=series(n, 200))
    for s in steps:
        r1 = s.decision.scores["r1"]
        assert not r1.suppressed and r1.penalty == 0
    suppressed_at = first_time(steps, lambda d: d.scores["direct"].suppressed)
    assert suppressed_at is not None and suppressed_at < 60
    # Before suppression direct attracted traffic back after recovering.
    assert "direct" in choices([s for s in steps if 15 < s.now < suppressed_at])
    # Suppressed: up and not held, yet no new flows.
    unused = [s.decision for s in steps if s.decision.scores["direct"].suppressed]
    assert any(d.scores["direct"].state is State.UP for d in unused)
    assert all(d.choice == "r1" and d.weights["direct"][0] == 0 for d in unused)
    # Once it stops flapping, the penalty decays and direct is reused.
    reused = first_time(steps, lambda d: not d.scores["direct"].suppressed, after=suppressed_at)
    assert reused is not None and reused > flapping_until
    assert steps[-1].decision.choice == "direct"


def test_split_spreads_new_flows_over_near_equal_paths():
    n = 300
    paths = ("direct", "r1", "r2")
    tr = {"direct": series(n, 100), "r1": series(n, 104), "r2": series(n, 200)}
    eng = engine(paths=paths, split=True)
    last = replay(eng, "d", tr)[-1].decision
    w = {p: last.weights[p][0] for p in paths}
    assert w["r2"] == 0 and w["direct"] + w["r1"] == 100
    assert 45 <= w["r1"] <= w["direct"] <= 55
    assert all(up for _, up in last.weights.values())
    single = replay(engine(paths=paths), "d", tr)[-1].decision
    assert {p: single.weights[p][0] for p in paths} == {"direct": 100, "r1": 0, "r2": 0}


def test_decisions_carry_reason_scores_and_explain():
    n = 30
    eng = engine()
    steps = run(eng, direct=series(n, 40), r1=series(n, 90))
    d = steps[-1].decision
    assert not d.changed and d.choice == "direct"
    assert d.scores["direct"].smoothed_ms == pytest.approx(40, abs=1)
    assert d.scores["r1"].raw_ms == pytest.approx(90)
    text = d.explain()
    assert "direct" in text and "r1" in text and d.reason in text
    assert eng.last("d") is d


def test_destinations_are_measured_separately():
    eng = Engine(POLICY, [("a", PATHS), ("b", PATHS)], clock=lambda: 0.0)
    assert eng.path("a", "r1") is not eng.path("b", "r1")
    with pytest.raises(ValueError):
        Engine(POLICY, [("a", ("direct", "direct"))])


def test_probe_scheduler_adapters_and_path_wide_passive_signals():
    eng = Engine(POLICY, [("a", PATHS), ("b", ("r1",))], clock=lambda: 0.0)
    eng.probe_result("a", "r1", 1, 1_000_000_000, 0.020, 1_020_000_000)
    eng.probe_result("a", "direct", 1, 1_000_000_000, None, 2_000_000_000)
    assert eng.path("a", "r1").snapshot().srtt_ms == pytest.approx(20)
    assert eng.path("a", "direct").snapshot().counts["timeouts"] == 1
    assert eng.in_doubt("a", "direct") and not eng.in_doubt("a", "r1")
    eng.on_path_passive("r1", 3, 1, [0.050], now=2.0)
    for dest in ("a", "b"):
        c = eng.path(dest, "r1").snapshot().counts
        assert (c["syn_sent"], c["synack_rcvd"], c["passive_rtt"]) == (3, 1, 0)
    assert eng.path("a", "direct").snapshot().counts["syn_sent"] == 0


def test_unanswered_syns_move_new_flows_even_while_probes_succeed():
    # Cloudflare's 522 signal: the probes to the responder work, but TCP
    # handshakes through direct fail. New flows go to r1; direct stays up
    # (its established flows stay) and comes back once the evidence ages out.
    n = 120
    eng = engine()
    syns = [(t + 0.9, lambda now: eng.on_path_passive("direct", 2, 0, [], now))
            for t in range(50, 56)]
    steps = replay(eng, "d", {"direct": series(n, 30), "r1": series(n, 60)}, extra=syns)
    moved = first_time(steps, lambda d: d.choice == "r1")
    assert 53.9 <= moved <= 54.5                # max(detect, SYN RTO) after the first SYN
    dec = next(s.decision for s in steps if s.now == moved)
    assert dec.weights == {"direct": (0, True), "r1": (100, True)}
    assert dec.scores["direct"].snapshot.counts["passive_fail"] == 1
    assert all(s.decision.weights["direct"][1] for s in steps)
    back = first_time(steps, lambda d: d.choice == "direct", after=moved)
    assert back is not None and back >= 55.9 + 10     # PASSIVE_FORGET_S after the last SYN


def test_bench_engine_prints_one_json_line(impl):
    import json

    from click.testing import CliRunner

    from argoctl.cli import cli
    res = CliRunner().invoke(cli, ["bench", "engine", "--json", "--destinations", "5",
                                   "--rounds", "20"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)
    assert rec["bench"] == "engine" and rec["destinations"] == 5 and rec["core_percent"] >= 0
    # it says which path states it measured (the fixture's)
    assert rec["path_states"] == impl


def test_a_seeded_choice_survives_until_measurements_say_otherwise():
    # Hitless restart: the previous run left r1 in the maps.
    # Direct answering first does not move it, nor does direct being slightly better.
    eng = engine()
    eng.seed_choice("d", "r1")
    steps = run(eng, direct=series(60, 48), r1=series(60, 50))
    assert set(choices(steps)) == {"r1"}
    assert steps[0].decision.weights == {"direct": (0, True), "r1": (100, True)}
    with pytest.raises(ValueError):
        eng.seed_choice("d", "r9")


def test_after_a_latency_switch_the_return_waits_for_hold_down():
    # +100 ms on direct from round 100 to 200: traffic moves to r1; once the
    # extra delay is gone, direct must stay better for hold_down_s first.
    n = 400
    eng = engine(hold_down_s=20)
    steps = run(eng, direct=series(n, 50, steps=[(100, 100), (200, -100)]), r1=series(n, 100))
    sw = switches(steps)
    assert [(f, t) for _, f, t in sw] == [("direct", "r1"), ("r1", "direct")]
    left, back = sw[0][0], sw[1][0]
    assert 100 < left < 115
    # When direct first looked better again the hold-down timer started.
    better = first_time(steps, lambda d: d.choice == "r1" and "hold-down" in d.reason, after=200)
    assert better is not None and better > 200
    assert back == pytest.approx(better + 20)
    assert "hold-down" in next(s.decision for s in steps if s.now == back).reason


def test_deciding_at_next_deadline_fails_over_at_the_detection_time():
    eng = engine(probe_interval_ms=50, probe_timeout_ms=50)
    est = eng.path("d", "direct")
    t = 0.0
    for seq in range(20):                            # both paths answer for 1 s
        eng.path("d", "direct").on_reply(seq, t, 0.002, t + 0.002)
        eng.path("d", "r1").on_reply(seq, t, 0.010, t + 0.010)
        t += 0.05
    eng.decide(t)
    # direct is blackholed now; r1 keeps answering. Decide only at deadlines.
    last = est.last_reply
    seq = 20
    while True:
        eng.path("d", "r1").on_reply(seq, t, 0.010, t + 0.010)
        seq, t = seq + 1, t + 0.05
        at = eng.next_deadline()
        if at is not None and at < t:
            dec = eng.decide(at)["d"]
            if not dec.weights["direct"][1]:
                break
    assert at == pytest.approx(last + 0.150)          # 3 x 50 ms after the last reply
    assert dec.choice == "r1"


def test_level_shift_is_seen_however_rarely_the_engine_decides():
    # Deciding every 5 probes sees the same replies as deciding every probe.
    n, at = 300, 150
    tr = {"direct": series(n, 100, noise=0.2, seed=5, steps=[(at, 100)]),
          "r1": series(n, 120, noise=0.2, seed=6)}
    every = switches(replay(engine(), "d", tr))
    rarely = switches(replay(engine(), "d", tr, decide_every=5.0))
    assert len(every) == len(rarely) == 1
    assert at + 5 < rarely[0][0] <= every[0][0] + 5


def test_destinations_measuring_the_same_thing_share_one_estimator():
    groups = {("a", "r1"): "g", ("b", "r1"): "g", ("c", "r1"): "h"}
    eng = Engine(POLICY, [("a", PATHS), ("b", PATHS), ("c", PATHS)], clock=lambda: 0.0,
                 groups=groups)
    assert eng.path("a", "r1") is eng.path("b", "r1") is not eng.path("c", "r1")
    assert eng.path("a", "direct") is not eng.path("b", "direct")
    assert eng.sharers("b", "r1") == ("a", "b") and eng.sharers("a", "direct") == ("a",)
    # one result (addressed to the first sharer, as the prober does) serves both
    eng.probe_result("a", "r1", 1, 1_000_000_000, 0.020, 1_020_000_000)
    assert eng.path("b", "r1").snapshot().srtt_ms == pytest.approx(20)
    assert eng.path("c", "r1").snapshot().srtt_ms is None
    # path-wide passive evidence reaches each estimator once, not once per sharer
    eng.on_path_passive("r1", 3, 1, [0.050], now=2.0)
    assert eng.path("a", "r1").snapshot().counts["syn_sent"] == 3
    assert eng.path("c", "r1").snapshot().counts["syn_sent"] == 3


def test_shared_scores_are_computed_once_but_decisions_stay_per_destination():
    now = [0.0]
    eng = Engine(POLICY, [("a", PATHS), ("b", PATHS)], clock=lambda: now[0],
                 groups={(d, p): p for d in "ab" for p in PATHS})
    eng.seed_choice("b", "r1")
    for seq in range(1, 40):
        for path, rtt in (("direct", 0.050), ("r1", 0.052)):
            eng.probe_result("a", path, seq, int(now[0] * 1e9), rtt, int((now[0] + rtt) * 1e9))
        now[0] += 1.0
        dec = eng.decide()
    # the same score objects (scored once per decision time) ...
    assert all(dec["a"].scores[p] is dec["b"].scores[p] for p in PATHS)
    # ... and each destination's own hysteresis: 2 ms is inside the margins, so
    # neither leaves the path it started on
    assert (dec["a"].choice, dec["b"].choice) == ("direct", "r1")
    # a result arriving at the same clock reading is not hidden by the memo
    eng.probe_result("a", "r1", 40, int(now[0] * 1e9), None, int(now[0] * 1e9))
    assert eng.decide_one("b", dec["b"].at).scores["r1"].snapshot.counts["timeouts"] == 1


def test_from_config_shares_exactly_the_same_probe_on_the_same_path(tmp_path):
    from argoctl.config import load
    body = ['[node]', 'name = "edge"', 'address = "192.0.2.1"',
            'tunnel_address = "198.51.100.129"',
            '[[peer]]', 'name = "r1"', 'address = "192.0.2.2"', 'tunnel = "gre"',
            'tunnel_address = "198.51.100.130"']
    probes = {"a": 'kind = "tcp", target = "203.0.113.10", port = 443',
              "b": 'kind = "tcp", target = "203.0.113.10", port = 443',
              "c": 'kind = "tcp", target = "203.0.113.10", port = 80',
              "d": None}
    for i, (name, probe) in enumerate(probes.items()):
        body += ["[[destination]]", f'name = "{name}"', f'prefixes = ["203.0.113.{64 + i * 8}/29"]',
                 'paths = ["direct", "r1"]'] + ([f"probe = {{ {probe} }}"] if probe else [])
    f = tmp_path / "edge.toml"
    f.write_text("\n".join(body) + "\n")
    eng = Engine.from_config(load(str(f)), clock=lambda: 0.0)
    for path in ("direct", "r1"):
        assert eng.sharers("a", path) == ("a", "b")
        assert eng.sharers("c", path) == ("c",) and eng.sharers("d", path) == ("d",)
    assert eng.path("a", "direct") is not eng.path("a", "r1")


def test_a_reason_read_later_tells_the_numbers_of_its_own_decision():
    # Reasons are formatted when first read: rounds decided in between must not
    # change what an earlier decision says.
    now = [0.0]
    eng = Engine(POLICY, [("d", PATHS)], clock=lambda: now[0])
    decisions = []
    for seq in range(40):
        for path, ms in (("direct", 50 + seq), ("r1", 52 + 2 * seq)):
            eng.path("d", path).on_reply(seq, now[0], ms / 1000, now[0] + ms / 1000)
        now[0] += 1.0
        decisions.append(eng.decide()["d"])
    early = decisions[10]
    cur, alt = early.scores["direct"], early.scores["r1"]
    gain = cur.smoothed_ms - alt.smoothed_ms
    assert early.reason.startswith(f"keep direct ({cur.smoothed_ms:.1f} ms): r1 better by "
                                   f"{gain:.1f} ms smoothed")
    assert early.reason != decisions[-1].reason and early.reason in early.explain()


# -- hold-down under flapping ---------------------------------------------------

FAST = dict(probe_interval_ms=50, probe_timeout_ms=150, recover_probes=5)


def _flapping(stalls=(), relay1=(), relay2=()):
    """direct (1 ms) down 2 s / up 2 s ten times from t = 10 s; relay1 (20 ms) and
    relay2 (26 ms) clean. `stalls`: rounds in which no path answers at all, as when
    the prober is starved (the bench's TCG VM): every path goes down together
    (230: during a flap; 350: while direct is up, its third failure). `relay1`,
    `relay2`: outages of their own."""
    n, paths = 1600, ("direct", "relay1", "relay2")
    flaps = [(200 + 80 * k, 240 + 80 * k) for k in range(10)]
    eng = engine(paths=paths, **FAST)
    steps = replay(eng, "d", {"direct": series(n, 1, outages=flaps + list(stalls)),
                              "relay1": series(n, 20, outages=list(stalls) + list(relay1)),
                              "relay2": series(n, 26, outages=list(stalls) + list(relay2))},
                   decide_every=0.0125)
    return eng, steps


def _returns_during_hold_down(steps):
    """Decisions that gave new flows to direct while it was held or suppressed
    and another path was up."""
    first_down = first_time(steps, lambda d: d.scores["direct"].state is State.DOWN)
    assert first_down is not None
    return [s for s in steps if s.now > first_down and s.decision.choice == "direct"
            and (s.decision.scores["direct"].tier_name == "held")
            and any(sc.state is State.UP for p, sc in s.decision.scores.items() if p != "direct")]


@pytest.mark.parametrize("stalls", [(), [(230, 235), (350, 356)]],
                         ids=["clean", "starved-prober"])
def test_a_flapping_path_is_not_returned_to_during_its_hold_down(stalls):
    # The bench's flapping scenario (issue 12) sent new flows back to direct 45
    # times despite the 30 s hold-down: a starved prober took the relays down
    # too, so they were held as well, and among held paths the score chose
    # direct. Among held paths the hold-down itself must rank them.
    eng, steps = _flapping(stalls)
    assert _returns_during_hold_down(steps) == []
    sw = switches(steps)
    assert sw[0][1:] == ("direct", "relay1")
    assert all(to != "direct" for _, _, to in sw)      # never back within the trace
    assert len(sw) <= 1 + 2 * len(stalls)


def test_among_held_paths_the_one_held_least_long_wins_not_the_fastest():
    # relay1 and relay2 each fail once, 100 ms apart (not one instant: charged)
    eng, steps = _flapping(relay1=[(230, 235)], relay2=[(232, 237)])
    later = [s.decision for s in steps if 13 < s.now < 40]
    assert later and all(d.choice == "relay1" for d in later)
    both_held = [d for d in later if d.scores["relay1"].tier_name == "held"
                 and d.scores["direct"].tier_name == "held"]
    assert both_held
    assert all(d.scores["relay1"].held_until < d.scores["direct"].held_until
               or d.scores["direct"].suppressed for d in both_held)


# -- common-mode silence (rule 6) ------------------------------------------------

def _standing(steps, at):
    """{path: (flap penalty, held)} in the first decision at or after `at`."""
    dec = next(s.decision for s in steps if s.now >= at)
    return {p: (round(sc.penalty), sc.held_until is not None) for p, sc in dec.scores.items()}


def test_a_stalled_prober_charges_no_path():
    # The bench's VM (issue 12): the starved prober hears nothing on any path for
    # 250-300 ms, every path goes down at once. That is not three path failures:
    # afterwards the relays stand exactly as in the same trace without the stalls
    # (not charged at all), direct is charged for its own flaps. (The stall at 350
    # runs into direct's next flap at 360: direct does not come back in between,
    # so that flap is one failure with the stall, excused: one flap less.)
    stalls = [(230, 235), (350, 356)]
    _, clean = _flapping()
    _, starved = _flapping(stalls)
    stalled = [s for s in starved if 11.5 < s.now < 11.75 or 17.5 < s.now < 17.8]
    assert all(s.decision.scores["relay1"].state is State.DOWN for s in stalled[-3:])
    for at in (12.0, 18.0, 30.0, 60.0):
        a, b = _standing(starved, at), _standing(clean, at)
        assert (a["relay1"], a["relay2"]) == (b["relay1"], b["relay2"]) == ((0, False),) * 2
        assert a["direct"][1] == b["direct"][1] and b["direct"][0] - 1000 <= a["direct"][0] <= b["direct"][0]
    assert _standing(starved, 18.0)["relay1"] == (0, False)
    assert _standing(starved, 18.0)["direct"][0] >= 1000     # its own flaps still count
    assert switches(starved)[0][1:] == ("direct", "relay1")
    # (the relays' short downs only: new flows stay on relay1, never back to direct)
    assert all(to != "direct" for _, _, to in switches(starved))


def test_a_path_failing_on_its_own_is_charged_even_if_the_others_stall_after():
    # direct dies at round 200; 150 ms later (its own detection time) the prober
    # stalls: direct's failure is its own (the relays were still answering when
    # it went silent), the relays' downs are the stall's.
    _, steps = _flapping(stalls=[(203, 209)])
    standing = _standing(steps, 11.0)
    assert standing["direct"][0] > 900          # one failure (1000), decaying
    assert standing["relay1"] == (0, False) and standing["relay2"] == (0, False)


def test_a_dead_uplink_is_reported_down_and_any_path_that_returns_gets_the_traffic():
    # A real common-mode failure: the host's uplink dies, every path is down for
    # 5 s. Reported as down (every path, the reason says so) with the last choice
    # kept up (rule 4: nothing to fail over to, never blackhole); then only relay1
    # returns (direct stays dead): Orpheus, relay1 gets new flows at once, held or
    # not; when direct returns it is not held for the uplink's failure.
    n = 1200
    eng = engine(paths=("direct", "relay1", "relay2"), **FAST)
    steps = replay(eng, "d", {"direct": series(n, 1, outages=[(200, 400)]),
                              "relay1": series(n, 20, outages=[(200, 300)]),
                              "relay2": series(n, 26, outages=[(200, 500)])},
                   decide_every=0.0125)
    down = [s.decision for s in steps if 11 < s.now < 14.9]
    assert down and all(all(sc.state is State.DOWN for sc in d.scores.values()) for d in down)
    last = down[0].choice       # (make-before-break had moved new flows on as they went)
    assert all(d.choice == last and d.weights[last] == (enginemod.TOTAL_WEIGHT, True)
               and d.reason.startswith("all paths down") for d in down)
    back = first_time(steps, lambda d: d.choice == "relay1", after=15.0)
    assert back is not None and back < 15.0 + 0.5           # 5 probes at the fast pace
    # direct returns at 20 s: usable (not held: the uplink was not its failure)
    # and faster, so new flows go back to it within the dwell, not after 30 s
    assert _standing(steps, 21.0)["direct"] == (0, False)
    assert first_time(steps, lambda d: d.choice == "direct", after=20.0) < 21.0


RTT3 = {"direct": 0.001, "relay1": 0.020, "relay2": 0.026}


def _stalled_loop(stall_s: float, relays_dead_s: float = 0.0):
    """Three paths probed every 50 ms, decisions every 12.5 ms (the daemon's
    rounds and deadlines). At t = 10 s the daemon's loop stalls `stall_s`:
    nothing is sent, nothing decided. When it runs again it sends to every path
    and reads direct's reply (1 ms: the drain before judging silence) before it
    decides; the relays' (20, 26 ms) come after. relays_dead_s: the relays
    themselves answer nothing for that long from 10 s. -> (engine, steps after
    the stall)."""
    eng = engine(paths=tuple(RTT3), **FAST)
    stop, resume = 10.0, 10.0 + stall_s
    sends = [i * 0.05 for i in range(200)] + [resume + i * 0.05 for i in range(60)]
    events = sorted((sent + r, 0, p, seq, sent, r) for seq, sent in enumerate(sends)
                    for p, r in RTT3.items()
                    if p == "direct" or not stop <= sent < stop + relays_dead_s)
    events += [(k * 0.0125, 1) for k in range(int(stop / 0.0125))]
    events += [(resume + 0.0015 + k * 0.0125, 1) for k in range(240)]
    steps = []
    for ev in sorted(events):
        if ev[1] == 0:
            at, _, p, seq, sent, rtt = ev
            eng.path("d", p).on_reply(seq, sent, rtt, at)
        else:
            dec = eng.decide_one("d", ev[0])
            if ev[0] > resume:
                steps.append(dataclasses.make_dataclass("S", ["now", "decision"])(ev[0], dec))
    return eng, steps


def test_after_a_stalled_loop_the_first_path_to_answer_does_not_charge_the_others():
    # The bench's VM (issue 12, the decision logs of 2026-12-03): the daemon's
    # loop stalls 300 ms. When it runs again, direct's fresh reply is read before
    # the relays are judged: they were silent from the same instant as direct,
    # but direct "answered since", so rule 6 charged them (a flap penalty and a
    # 30 s hold-down per stall: after a few, every path was suppressed and held).
    # direct's silence ended after their deadlines: one event, nobody charged.
    _, steps = _stalled_loop(0.3)
    first = steps[0].decision
    assert first.scores["direct"].state is State.UP
    assert first.scores["relay1"].state is State.DOWN
    assert first.scores["relay2"].state is State.DOWN
    assert _standing(steps, 12.0) == {p: (0, False) for p in RTT3}
    assert {s.decision.choice for s in steps} == {"direct"}


def test_a_path_silent_past_its_deadline_while_another_answered_is_charged():
    # The same short silence (100 ms) on every path, but the relays stay silent
    # (their own failure): direct answered again before their deadlines.
    _, steps = _stalled_loop(0.1, relays_dead_s=1.0)
    later = _standing(steps, 12.0)
    assert later["direct"] == (0, False)
    assert later["relay1"][0] > 900 and later["relay2"][0] > 900
    assert later["relay1"][1] and later["relay2"][1]        # held after they return


# -- detection time (issue 12's one-way gap) --------------------------------------

def _leave_direct(at_deadlines: bool, phase: float):
    """direct (1 ms) answers until round 200, relay1 (20 ms) always; decisions every
    50 ms at `phase` after the sends (the daemon's rounds) and, `at_deadlines`, at
    every Engine.due() time as the daemon now does. -> (last direct reply, when
    new flows left direct, when direct was declared down)."""
    eng = engine(paths=("direct", "relay1"), **FAST)
    events = []
    for i in range(260):
        sent = i * 0.05
        if i < 200:
            events.append((sent + 0.001, "direct", i, sent, 0.001))
        events.append((sent + 0.020, "relay1", i, sent, 0.020))
    events.sort()
    rounds = [i * 0.05 + phase for i in range(260)]
    left = down = None
    k, now = 0, 0.0
    while k < len(events) or rounds:
        nxt = eng.due(now)[1] if at_deadlines else None
        cands = [t for t in (events[k][0] if k < len(events) else None,
                             rounds[0] if rounds else None, nxt) if t is not None]
        now = min(cands)
        while k < len(events) and events[k][0] <= now:
            at, p, seq, sent, rtt = events[k]
            eng.path("d", p).on_reply(seq, sent, rtt, at)
            k += 1
        if rounds and rounds[0] <= now:
            rounds.pop(0)
        dec = eng.decide_one("d", now)
        if left is None and now > 5 and dec.choice != "direct":
            left = now
        if down is None and dec.scores["direct"].state is State.DOWN:
            down = now
    return 199 * 0.05 + 0.001, left, down


@pytest.mark.parametrize("phase", [0.005, 0.03, 0.049])
def test_silence_is_judged_at_its_deadline_from_the_last_reply_not_at_the_next_round(phase):
    # BFD declares a session down detect_mult x interval after the last packet
    # received (BIRD arms a hold timer there). argoctl's rule is the same (new flows
    # move at the first miss, suspect_after; down at detect), but the daemon used
    # to look only at its rounds (every interval): up to an interval late, 25 ms
    # on average at 50 ms probes: the bench's one-way 179 ms against BIRD's 137.
    t = dataclasses.replace(POLICY, **FAST).timing
    last, left, down = _leave_direct(True, phase)
    assert left == pytest.approx(last + t.suspect_after_s, abs=1e-9)
    assert down == pytest.approx(last + t.detect_s, abs=1e-9)
    _, left_rounds, _ = _leave_direct(False, phase)      # rounds only: the old loop
    assert last + t.suspect_after_s <= left_rounds < last + t.suspect_after_s + 0.05 + 1e-9
