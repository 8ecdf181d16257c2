"""Estimator: RTT/jitter arithmetic, loss window, reachability state machine.
Every test runs twice: on estimator.Estimator and on the compiled
_pathcore.PathState the engine uses when it is built."""

import dataclasses

import pytest

from argoctl import engine as enginemod
from argoctl.config import Policy
from argoctl.engine import Tuning
from argoctl.estimator import Estimator, State

import traces

POLICY = Policy(probe_interval_ms=1000, probe_timeout_ms=1000, probe_jitter=0.1,
                detect_multiplier=3, recover_probes=5, loss_window=20, rtt_alpha=0.125)


_MAKE = {}


@pytest.fixture(autouse=True, params=["compiled", "python"])
def impl(request):
    """The compiled one must be built here: `make setup` builds it."""
    if request.param == "compiled":
        assert enginemod._pathcore is not None, "argoctl._pathcore is not built (pip install -e .)"
        _MAKE["est"] = lambda pol: enginemod._pathcore.PathState(pol, Tuning(), 0.0)
    else:
        _MAKE["est"] = lambda pol: Estimator(pol, now=0.0)
    return request.param


def est(**kw) -> Estimator:
    return _MAKE["est"](dataclasses.replace(POLICY, **kw))


def feed(e: Estimator, rtts_ms, start_seq=0, t0=0.0, interval=1.0):
    """Replies for consecutive probes; returns the next seq and send time."""
    seq, t = start_seq, t0
    for r in rtts_ms:
        if r is None:
            e.on_timeout(seq, t + 1.0)
        else:
            e.on_reply(seq, t, r / 1000, t + r / 1000)
        seq, t = seq + 1, t + interval
    return seq, t


def test_srtt_rttvar_jitter_on_a_known_sequence():
    e = est()
    feed(e, [100, 120, 80, 100])
    s = e.snapshot()
    # RFC 6298 (alpha 1/8, beta 1/4) and RFC 3550 jitter (gain 1/16) by hand:
    # srtt 100 -> 102.5 -> 99.6875 -> 99.7265625
    # rttvar 50 -> 42.5 -> 37.5 -> 28.203125
    # jitter 0 -> 1.25 -> 3.671875 -> 4.6923828125
    assert s.srtt_ms == pytest.approx(99.7265625)
    assert s.rttvar_ms == pytest.approx(28.203125)
    assert s.jitter_ms == pytest.approx(4.6923828125)
    assert s.last_rtt_ms == pytest.approx(100)
    assert s.counts["replies"] == 4 and s.loss == 0


def test_passive_handshake_rtt_counts_at_a_quarter_of_an_active_sample():
    active, passive = est(), est()
    for e in (active, passive):
        feed(e, [100])
    feed(active, [200], start_seq=1)
    passive.on_passive(1, 1, [0.200], now=2.0)
    assert active.snapshot().srtt_ms == pytest.approx(112.5)
    assert passive.snapshot().srtt_ms == pytest.approx(103.125)
    # Handshake RTTs do not move the jitter or the raw (latest probe) sample.
    assert passive.snapshot().jitter_ms == 0 and passive.snapshot().last_rtt_ms == 100


def test_loss_is_over_the_last_window_of_probes():
    e = est(loss_window=4)
    feed(e, [10, None, 10, 10])
    assert e.loss == pytest.approx(0.25)
    feed(e, [None, None], start_seq=4, t0=4.0)      # window: 10 10 lost lost
    assert e.loss == pytest.approx(0.5)
    feed(e, [10, 10, 10], start_seq=6, t0=6.0)      # the losses slide out
    assert e.loss == pytest.approx(0.25)
    feed(e, [10], start_seq=9, t0=9.0)
    assert e.loss == 0


def test_late_and_duplicate_replies_are_ignored():
    e = est()
    feed(e, [10, 10])
    e.on_timeout(2, 3.0)
    e.on_reply(2, 2.0, 1.5, 3.5)         # after its timeout: still a loss
    e.on_reply(1, 1.0, 0.010, 3.6)       # replayed/duplicated
    s = e.snapshot()
    assert s.loss == pytest.approx(1 / 3)
    assert s.counts["late"] == 1 and s.counts["duplicate"] == 1
    assert s.last_rtt_ms == pytest.approx(10) and s.last_reply == pytest.approx(1.01)


def test_states_up_suspect_recover_down():
    e = est()
    assert e.state is State.UNKNOWN and e.in_doubt
    seq, t = feed(e, [10])
    assert e.state is State.UP and not e.in_doubt
    seq, t = feed(e, [None], seq, t)
    assert e.state is State.SUSPECT                 # suspect at the first miss
    seq, t = feed(e, [10] * 4, seq, t)
    assert e.state is State.SUSPECT                 # 4 < recover_probes
    seq, t = feed(e, [10], seq, t)
    assert e.state is State.UP                      # sustained success
    assert e.recovered_at is None                   # was never down: no hold-down
    seq, t = feed(e, [None] * 3, seq, t)
    assert e.state is State.DOWN and e.counts["downs"] == 1
    assert not e.in_doubt                           # dead: normal probe rate
    seq, t = feed(e, [10] * 4 + [None] + [10] * 4, seq, t)
    assert e.state is State.DOWN                    # a miss restarts the count
    assert e.in_doubt                               # recovering: probe faster
    seq, t = feed(e, [10], seq, t)
    assert e.state is State.UP and e.recovered_at == pytest.approx(t - 1 + 0.010)


def test_silence_is_detected_by_time_not_by_the_next_timeout():
    e = est()
    feed(e, [10] * 5)                                # last reply at 4.010
    last = e.last_reply
    e.tick(last + 1.5)
    assert e.state is State.UP                       # one jittered interval: not a miss yet
    assert e.suspect_after == pytest.approx(2.1)     # 1.1 s interval + 1 s timeout
    e.tick(last + 2.11)
    assert e.state is State.SUSPECT
    e.tick(last + 3.0 - 1e-6)
    assert e.state is State.SUSPECT                  # not before the detection time
    e.tick(last + 3.0)
    assert e.state is State.DOWN and e.since == pytest.approx(last + 3.0)


def test_a_path_that_never_answered_goes_down_without_counting_a_failure():
    e = est()
    seq, t = feed(e, [None] * 3)
    assert e.state is State.DOWN and e.counts["downs"] == 0
    feed(e, [10] * 5, seq, t)
    assert e.state is State.UP and e.recovered_at is None   # nothing to hold down


def test_broken_return_direction_is_down():
    # The far end receives every probe (forward works) but from round 10 on
    # its replies never come back: only completed round trips count.
    rounds, broken = 20, [(10, 20)]
    trace = traces.series(rounds, 30, return_outages=broken)
    assert traces.delivered(rounds) == rounds        # the responder saw all 20
    e = est()
    feed(e, [None if r is None else r * 1000 for r in trace])
    e.tick(20.0)
    assert e.state is State.DOWN and e.counts["timeouts"] == 10
    assert e.loss == pytest.approx(0.5)


def test_unanswered_syns_make_the_path_suspect_until_a_synack():
    e = est()
    seq, t = feed(e, [10] * 3)                       # up; t = 3.0
    e.on_passive(4, 0, [], now=3.0)
    seq, t = feed(e, [10] * 2, seq, t)               # probes still fine
    e.tick(4.5)
    assert e.state is State.UP                       # within max(detect, SYN RTO)
    seq, t = feed(e, [10] * 2, seq, t)
    e.on_passive(2, 0, [], now=6.02)                 # still no SYN-ACK after 3 s
    assert e.state is State.SUSPECT and e.counts["passive_fail"] == 1
    seq, t = feed(e, [10] * 6, seq, t)
    assert e.state is State.SUSPECT                  # probes alone cannot clear it
    e.on_passive(1, 3, [0.012], now=t)
    assert e.state is State.UP                       # handshakes complete again


def test_estimator_is_deterministic_on_a_replayed_trace():
    trace = traces.series(500, 80, noise=0.2, seed=7, loss=0.05, outages=[(200, 210)])

    def run():
        e = est()
        feed(e, [None if r is None else r * 1000 for r in trace])
        e.tick(500.0)
        return e.snapshot()
    assert run() == run()


def test_passive_evidence_is_forgotten_once_no_new_syn_uses_the_path():
    # New flows moved away (make-before-break), so no SYN-ACK can clear the
    # evidence; without new SYNs it ages out and the probes bring it back up.
    from argoctl.estimator import PASSIVE_FORGET_S
    e = est()
    seq, t = feed(e, [10] * 3)
    e.on_passive(3, 0, [], now=3.0)
    seq, t = feed(e, [10] * 4, seq, t)               # t = 7.0
    e.tick(6.5)
    assert e.state is State.SUSPECT
    e.on_passive(1, 0, [], now=7.0)                  # a client's SYN retry
    seq, t = feed(e, [10] * 10, seq, t)              # replies until 16.01
    e.tick(7.0 + PASSIVE_FORGET_S - 0.1)
    assert e.state is State.SUSPECT                  # probes alone cannot clear it
    e.tick(7.0 + PASSIVE_FORGET_S)
    assert e.state is State.UP and e.counts["passive_fail"] == 1


def test_next_deadline_is_when_silence_changes_the_state():
    e = est()
    assert e.next_deadline() is None                 # nothing heard yet
    feed(e, [10] * 3)                                # last reply 2.010
    assert e.next_deadline() == pytest.approx(2.010 + 2.1)
    e.tick(e.next_deadline())
    assert e.state is State.SUSPECT
    assert e.next_deadline() == pytest.approx(2.010 + 3.0)
    e.tick(e.next_deadline())
    assert e.state is State.DOWN and e.next_deadline() is None
    e2 = est()
    feed(e2, [10] * 3)
    e2.on_passive(3, 0, [], now=2.5)
    assert e2.next_deadline() == pytest.approx(2.010 + 2.1)   # silence comes first


def test_a_snapshot_shows_what_tick_changed_since_the_last_one():
    # Snapshots are handed out again while nothing changed: a change made by
    # time alone (silence, passive evidence maturing) must still show.
    e = est()
    seq, t = feed(e, [10] * 3)                       # last reply 2.010
    up = e.snapshot()
    assert up.state is State.UP and e.snapshot() is up
    e.tick(2.010 + 2.1)                              # silence: suspect
    assert e.snapshot().state is State.SUSPECT and e.snapshot().since == 2.010 + 2.1
    e.tick(2.010 + 3.0)                              # detection time: down
    down = e.snapshot()
    assert down.state is State.DOWN and down.counts["downs"] == 1
    assert up.state is State.UP and up.counts["downs"] == 0      # old snapshot unchanged
    p = est()
    seq, t = feed(p, [10] * 3)
    p.on_passive(4, 0, [], now=3.0)
    feed(p, [10] * 3, seq, t)                        # replies until 5.01
    before = p.snapshot()
    p.tick(6.0)                                      # unanswered SYNs mature in tick
    after = p.snapshot()
    assert (before.state, before.counts["passive_fail"]) == (State.UP, 0)
    assert (after.state, after.counts["passive_fail"]) == (State.SUSPECT, 1)


def test_late_replies_are_recognised_until_they_leave_the_longer_memory():
    e = est(loss_window=4)                           # remembers max(64, 16) resolved seqs
    for seq in range(100):
        e.on_timeout(seq, float(seq))
    e.on_reply(99 - 63, 0.0, 0.010, 100.0)           # still remembered: late
    assert e.counts["late"] == 1 and e.counts["replies"] == 0
    e.on_reply(99 - 64, 0.0, 0.010, 100.0)           # forgotten: counts as a reply
    assert e.counts["late"] == 1 and e.counts["replies"] == 1
