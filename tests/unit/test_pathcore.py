"""argoctl._pathcore.PathState against the Python it mirrors.

The compiled path state must decide exactly as estimator.Estimator +
engine._PathState: the same decisions, reasons, weights, scores and snapshots,
float for float. Random traces (noise, level shifts, outages, loss, duplicate
and late replies, passive SYN evidence, decisions at irregular times) go
through two engines, one of each, and every decision is compared. (The
compiled probe channel's direct feed: tests/unit/test_echo_native.py.)"""

import dataclasses
import random

import pytest

from argoctl import engine as enginemod
from argoctl.config import Policy
from argoctl.engine import Engine, Tuning
from argoctl.estimator import Estimator, State

pathcore = enginemod._pathcore

BASE = Policy(probe_interval_ms=1000, probe_timeout_ms=1000, probe_jitter=0.1,
              detect_multiplier=3, recover_probes=3, hold_down_s=20.0,
              switch_relative=0.10, switch_absolute_ms=5.0, loss_window=10, rtt_alpha=0.125)
PATHS = ("direct", "r1", "r2")


def test_the_extension_is_built():
    assert pathcore is not None, "argoctl._pathcore is not built (pip install -e .)"


def _trace(seed: int, rounds: int):
    """Events [(kind, dest, path, args)] with times; decisions interleaved."""
    rng = random.Random(seed)
    dests = [f"d{i}" for i in range(3)]
    level = {(d, p): rng.uniform(10, 120) for d in dests for p in PATHS}
    down_until = {("d0", "r2"): 30}        # one path never answers at first
    events, seqs, t = [], {}, 0.0
    # a stalled prober now and then: no path of any destination sends or hears
    # anything for a few rounds (engine rule 6: common-mode, not charged); its
    # own generator, so the rest of each trace is what it was before
    stalls, stall_until = random.Random(seed + 1), -1
    for r in range(rounds):
        t += 1.0
        if stalls.random() < 0.02:
            stall_until = r + stalls.randint(3, 8)
        if stall_until > r:
            continue
        for (d, p), ms in level.items():
            if rng.random() < 0.01:          # a level shift (reroute, queue)
                level[(d, p)] = ms = max(1.0, ms + rng.choice((-1, 1)) * rng.uniform(20, 150))
            if rng.random() < 0.01:          # an outage of a few to tens of probes
                down_until[(d, p)] = r + rng.randint(2, 40)
            seq = seqs[(d, p)] = seqs.get((d, p), 0) + 1
            sent = t + rng.uniform(0, 0.2)
            if down_until.get((d, p), -1) > r:
                # in doubt the daemon probes 4x faster: timeouts come quicker than silence
                for k in range(4):
                    seq = seqs[(d, p)] = seq + (k > 0)
                    events.append((sent + 1.0 + k / 4, "timeout", d, p, (seq,)))
                continue
            if rng.random() < 0.03:
                events.append((sent + 1.0, "timeout", d, p, (seq,)))
                if rng.random() < 0.1:       # ...whose reply arrives after all: late
                    events.append((sent + 1.2, "reply", d, p, (seq, sent, 1.2)))
                continue
            rtt = ms * (1 + rng.uniform(-0.2, 0.2)) / 1000
            if rng.random() < 0.05:
                rtt = None                   # "now - sent_at"
            events.append((sent + (rtt or 0.05), "reply", d, p, (seq, sent, rtt)))
            if rng.random() < 0.02:          # a duplicate
                events.append((sent + 0.3, "reply", d, p, (seq, sent, 0.3)))
        if rng.random() < 0.1:               # passive evidence on one path (all its users)
            p = rng.choice(PATHS)
            syn, ack = rng.randint(0, 6), rng.choice((0, 0, rng.randint(0, 6)))
            samples = [rng.uniform(0.005, 0.2)] if ack and rng.random() < 0.5 else []
            events.append((t + 0.5, "passive", None, p, (syn, ack, samples)))
        # decisions: usually once a round, sometimes twice at the same time,
        # sometimes one destination only, sometimes a round skipped
        x = rng.random()
        if x < 0.85:
            events.append((t + 0.7, "decide", None, None, ()))
            if x < 0.05:
                events.append((t + 0.7, "decide", None, None, ()))
        elif x < 0.95:
            events.append((t + 0.7, "decide_one", rng.choice(dests), None, ()))
    events.sort(key=lambda e: e[0])
    return dests, events


def _engine(dests, policy, tuning, native, groups=None):
    return Engine(policy, [(d, PATHS) for d in dests], clock=lambda: 0.0, tuning=tuning,
                  groups=groups, native=native)


def _same_path(a, b, dest, path):
    ea, eb = a.path(dest, path), b.path(dest, path)
    assert ea.snapshot() == eb.snapshot(), (dest, path)
    assert (ea.state, ea.loss, ea.in_doubt, ea.next_deadline(), ea.counts) == \
        (eb.state, eb.loss, eb.in_doubt, eb.next_deadline(), eb.counts), (dest, path)


POLICIES = [
    ("default", BASE, Tuning()),
    ("split", dataclasses.replace(BASE, split=True), Tuning()),
    ("twitchy", dataclasses.replace(BASE, detect_multiplier=2, recover_probes=1, hold_down_s=3.0,
                                    switch_relative=0.0, switch_absolute_ms=1.0, loss_window=3,
                                    probe_jitter=0.5),
     Tuning(dwell=0, smooth_half_life=2.0, shift_samples=2, flap_half_life_s=5.0)),
    ("odd shift window", BASE, Tuning(shift_samples=4)),
]


@pytest.mark.parametrize("name, policy, tuning", POLICIES, ids=[p[0] for p in POLICIES])
@pytest.mark.parametrize("seed", range(4))
def test_random_traces_decide_identically(name, policy, tuning, seed):
    dests, events = _trace(seed * 7 + len(name), 400)
    # d1 and d2 share their r2 measurement (Config.measurement)
    groups = {("d1", "r2"): "shared", ("d2", "r2"): "shared"}
    py = _engine(dests, policy, tuning, native=False, groups=groups)
    c = _engine(dests, policy, tuning, native=True, groups=groups)
    decided = changed = 0
    for t, kind, d, p, args in events:
        for eng in (py, c):
            if kind == "reply":
                eng.path(d, p).on_reply(args[0], args[1], args[2], t)
            elif kind == "timeout":
                eng.path(d, p).on_timeout(args[0], t)
            elif kind == "passive":
                eng.on_path_passive(p, *args, t)
        if kind == "decide":
            a, b = py.decide(t), c.decide(t)
            assert a == b, next((a[k], b[k]) for k in a if a[k] != b[k])
            for dec in a.values():
                # (equal by value is not enough: equal floats may print differently)
                assert repr(dec) == repr(b[dec.dest])
            decided += 1
            changed += sum(dec.changed for dec in a.values())
        elif kind == "decide_one":
            a, b = py.decide_one(d, t), c.decide_one(d, t)
            assert a == b and a.reason == b.reason and a.explain() == b.explain()
    for d in dests:
        for p in PATHS:
            _same_path(py, c, d, p)
    assert py.next_deadline() == c.next_deadline()
    # the traces exercised something: choices changed, paths went down and recovered
    downs = sum(py.path(d, p).counts["downs"] for d in dests for p in PATHS)
    excused = sum(py.path(d, p).counts["excused"] for d in dests for p in PATHS)
    assert decided > 300 and changed > 3 and downs > excused > 0


def test_a_shared_measurement_is_one_compiled_path_state():
    eng = Engine(BASE, [("a", PATHS), ("b", PATHS)], clock=lambda: 0.0, native=True,
                 groups={("a", "r1"): "g", ("b", "r1"): "g"})
    assert eng.path("a", "r1") is eng.path("b", "r1")
    assert eng.native_sink("a", "r1") is eng.native_sink("b", "r1")
    assert eng.sharers("a", "r1") == ("a", "b") and eng.sharers("a", "direct") == ("a",)
    assert Engine(BASE, [("a", PATHS)], native=False).native_sink("a", "r1") is None


def test_bad_construction_and_use_are_refused():
    with pytest.raises(ValueError, match="loss_window"):
        pathcore.PathState(dataclasses.replace(BASE, loss_window=0), Tuning())
    with pytest.raises(AttributeError):
        pathcore.PathState(object(), Tuning())
    p = pathcore.PathState(BASE, Tuning(), 5.0)
    with pytest.raises(RuntimeError, match="already"):
        p.__init__(BASE, Tuning())
    bare = pathcore.PathState.__new__(pathcore.PathState)
    with pytest.raises(RuntimeError, match="not initialised"):
        bare.on_reply(1, 0.0, 0.01, 0.01)
    with pytest.raises(TypeError):
        p.on_reply("one", 0.0, 0.01, 0.01)
    with pytest.raises(TypeError):
        p.on_passive(1, 0, [0.1, "x"], 1.0)
    assert p.counts["syn_sent"] == 0 and p.version == 0    # the bad call changed nothing
    assert p.state is State.UNKNOWN and p.since == 5.0 and p.est is p


def test_probe_results_at_monotonic_ns_scale_agree_to_the_last_bit():
    """Engine.probe_result (ns in, seconds to the estimators) on both
    implementations, with sent/arrival times of a long-running host's
    CLOCK_MONOTONIC: the snapshots are equal, float for float."""
    rng = random.Random(3)
    eng_c = Engine(BASE, [("d", ("direct",))], native=True)
    eng_py = Engine(BASE, [("d", ("direct",))], native=False)
    t = 10**13 + 123456789
    for seq in range(1, 200):
        sent = t + seq * 10**9 + rng.randrange(10**8)
        if rng.random() < 0.1:
            at, rtt = sent + 10**9, None
        else:
            at = sent + rng.randrange(1, 3 * 10**8)
            rtt = max(0, at - sent) / 1e9
        for eng in (eng_c, eng_py):
            eng.probe_result("d", "direct", seq, sent, rtt, at)
    assert eng_c.path("d", "direct").snapshot() == eng_py.path("d", "direct").snapshot()
