"""A path's score and state as the engine sees them: Tuning, PathScore, and the
Python specification of the compiled PathState (argoctl/_pathcore.c mirrors it;
tests/unit/test_pathcore.py compares them exactly)."""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from typing import Optional

from argoctl.config import TOTAL_WEIGHT, Policy  # noqa: F401  (re-exported)
from argoctl.estimator import UP as S_UP, Estimator, Snapshot, State

USABLE, HELD, SUSPECT, UNKNOWN, DOWN = range(5)
TIER_NAMES = ("usable", "held", "suspect", "unknown", "down")
_STATE_TIER = {State.DOWN: DOWN, State.UNKNOWN: UNKNOWN, State.SUSPECT: SUSPECT}
# (weight, up) of a path in a single-path decision, shared by all of them
_ALL_UP, _NONE_UP, _NONE_DOWN = (TOTAL_WEIGHT, True), (0, True), (0, False)


@dataclass(frozen=True)
class Tuning:
    """Engine constants that are not (yet) config knobs."""
    jitter_weight: float = 1.0
    loss_cost_ms: float = 200.0        # a lost packet costs a retransmission timeout
    # Second smoothing stage, in probe intervals. Distinguishing a 10% margin
    # under +-20% per-sample noise without ever crossing it by chance needs
    # tens of samples; srtt alone (alpha 1/8) averages about 15.
    smooth_half_life: float = 24.0
    dwell: float = 5.0                 # probe intervals a better candidate must stay better
    # Level shift: when the last shift_samples raw scores all lie beyond
    # shift_margins switch margins on the same side of the smoothed score, the
    # path really changed (a reroute, a queue): restart the smoothed score from
    # their median instead of waiting tens of probes for the EWMAs. Noise of
    # +-20% essentially never does this (five 2-sigma draws in a row).
    shift_samples: int = 5
    shift_margins: float = 2.0
    flap_penalty: float = 1000.0       # RFC 2439 units per failure
    flap_suppress: float = 2000.0
    flap_reuse: float = 750.0
    flap_half_life_s: float = 60.0
    flap_max_suppress_s: float = 300.0  # caps the penalty: reuse within this long
    split_step: int = 5                # split weights are multiples of this


@dataclass(slots=True)
class PathScore:
    """One path's standing in a decision (for `argoctl explain`, logs, metrics)."""
    path: str
    state: State
    tier: int
    raw_ms: Optional[float]
    smoothed_ms: Optional[float]
    penalty: float
    suppressed: bool
    held_until: Optional[float]
    snapshot: Snapshot

    @property
    def tier_name(self) -> str:
        return TIER_NAMES[self.tier]


class _Scoring:
    """What scoring a path needs from the engine: constants, and the smoothing
    factor of the latest time step (every path of a round has the same one)."""
    __slots__ = ("tuning", "half_life_s", "rel", "abs", "hold_down_s", "decay_dt", "decay")

    def __init__(self, policy: Policy, tuning: Tuning):
        self.tuning = tuning
        self.half_life_s = tuning.smooth_half_life * policy.timing.interval_s
        self.rel, self.abs = policy.switch_relative, policy.switch_absolute_ms
        self.hold_down_s = policy.timing.hold_down_s
        self.decay_dt: Optional[float] = None
        self.decay = 0.0


class _PathState:
    """A path's measurement and its scoring state; shared by the destinations
    that measure the same thing (Engine's `groups`). _pathcore.PathState is
    the compiled twin (estimator and this in one object: its `est` is itself)."""
    __slots__ = ("est", "scoring", "smoothed", "smoothed_at", "penalty", "penalty_at",
                 "suppressed", "downs_seen", "recovered_seen", "recent", "replies_seen",
                 "scored", "scored_now", "scored_version", "dests")

    def __init__(self, est: Estimator, scoring: _Scoring):
        self.est = est
        self.scoring = scoring
        self.smoothed: Optional[float] = None
        self.smoothed_at = 0.0
        self.penalty = 0.0
        self.penalty_at = 0.0
        self.suppressed = False
        self.downs_seen = 0
        self.recovered_seen: Optional[float] = None
        # raw scores of the latest replies (the level-shift test's window)
        self.recent: deque[float] = deque(maxlen=scoring.tuning.shift_samples)
        self.replies_seen = 0
        # the latest score, valid at scored_now while est.version is scored_version
        self.scored: Optional[PathScore] = None
        self.scored_now: Optional[float] = None
        self.scored_version = -1
        self.dests: list[str] = []             # destinations reading this path state

    def score(self, name: str, now: float) -> PathScore:
        """This path's standing at `now` (the same object again for another
        destination at the same `now` until the estimator changes)."""
        # Runs for every path every round: attribute reads are hoisted into
        # locals, and nothing is computed that the common case does not need.
        ps, est, sc = self, self.est, self.scoring
        if ps.scored_now == now and ps.scored_version == est.version:
            return ps.scored    # shared, and scored for another destination just now
        t = sc.tuning
        est.tick(now)
        snap = est.snapshot()
        counts = snap.counts
        # Flap damping: decay, then charge new failures.
        penalty = ps.penalty
        if penalty:
            penalty *= 0.5 ** ((now - ps.penalty_at) / t.flap_half_life_s)
        ps.penalty_at = now
        # A failure is a path going down, or its handshakes failing (passive);
        # a down the engine excused (common-mode silence) is not one.
        downs = counts["downs"] + counts["passive_fail"] - counts["excused"]
        if downs > ps.downs_seen:
            cap = t.flap_reuse * 2 ** (t.flap_max_suppress_s / t.flap_half_life_s)
            penalty = min(cap, penalty + t.flap_penalty * (downs - ps.downs_seen))
            ps.downs_seen = downs
        ps.penalty = penalty
        if penalty > t.flap_suppress:
            ps.suppressed = True
        elif penalty < t.flap_reuse:
            ps.suppressed = False
        # Scores (the module docstring's formula), written as
        # score(rtt) = (rtt + add) * inv.
        loss = snap.loss
        if loss >= 0.99:
            loss = 0.99
        inv = 1.0 / (1.0 - loss)
        add = t.jitter_weight * snap.jitter_ms + t.loss_cost_ms * loss
        last_ms, srtt_ms, recovered = snap.last_rtt_ms, snap.srtt_ms, snap.recovered_at
        raw = None if last_ms is None else (last_ms + add) * inv
        smoothed = ps.smoothed
        if srtt_ms is None:
            smoothed = None
        else:
            base = (srtt_ms + add) * inv
            if smoothed is None or recovered != ps.recovered_seen:
                smoothed = base      # first sample, or back from down: history is stale
                ps.recovered_seen = recovered
            else:
                dt = now - ps.smoothed_at
                if dt > 0:
                    if dt != sc.decay_dt:
                        sc.decay_dt, sc.decay = dt, 1 - 0.5 ** (dt / sc.half_life_s)
                    smoothed += (base - smoothed) * sc.decay
        ps.smoothed_at = now
        replies = counts["replies"]
        new = replies - ps.replies_seen
        if raw is not None and new > 0:
            # Every reply since the last decision, however often we decide
            # (`recent` keeps the last shift_samples).
            ps.replies_seen = replies
            recent, n = ps.recent, t.shift_samples
            if new == 1:
                recent.append(raw)      # the latest reply's raw score
            else:
                rtts = est.recent
                for i in range(min(new, n, len(rtts)), 0, -1):
                    recent.append((rtts[-i] * 1000.0 + add) * inv)
            if smoothed is not None and len(recent) == n:
                m = smoothed * sc.rel
                if m < sc.abs:
                    m = sc.abs
                m *= t.shift_margins
                if min(recent) > smoothed + m or max(recent) < smoothed - m:
                    smoothed = statistics.median(recent)
                    recent.clear()
        ps.smoothed = smoothed
        held_until = None
        if recovered is not None and now < recovered + sc.hold_down_s:
            held_until = recovered + sc.hold_down_s
        state = snap.state
        if state is S_UP:
            tier = HELD if (held_until is not None or ps.suppressed) else USABLE
        else:
            tier = _STATE_TIER[state]
        ps.scored = scored = PathScore(name, state, tier, raw, smoothed, penalty,
                                       ps.suppressed, held_until, snap)
        ps.scored_now, ps.scored_version = now, est.version
        return scored


# -- the text of decisions (engine.py) ----------------------------------

def _held_txt(s: PathScore, now: float) -> str:
    if s.suppressed:
        return f"suppressed, flap penalty {s.penalty:.0f}"
    return "held {:.1f}s more".format(s.held_until - now) if s.held_until is not None else "held"


def _score_txt(s: PathScore) -> str:
    return f", {s.smoothed_ms:.1f} ms" if s.smoothed_ms is not None else ""


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}ms"
