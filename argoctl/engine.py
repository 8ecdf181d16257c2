"""Per-destination decisions from the path estimators.

Pure Python, no I/O; time comes from `now` (seconds) or the injected clock, so
the tests replay traces deterministically.

    eng = Engine(policy, [("web", ("direct", "r1"))], clock=time.monotonic)
    eng.path("web", "r1").on_reply(seq, sent_at, rtt, now)    # estimator.py
    decisions = eng.decide(now)    # {dest: Decision}

Rules, in order:

1. Reachability first (Orpheus): paths are ranked in tiers and a path of a
   better tier always wins, immediately, without hysteresis:
     0 usable     up, not held down, not suppressed
     1 held       up but in hold-down after a failure, or flap-suppressed
     2 suspect    in doubt (a miss, or recovering)
     3 unknown    never measured
     4 down
   So a held or suppressed path is still used when nothing usable remains:
   if any path reaches the destination, traffic gets there. Held paths rank
   among themselves by the hold-down, not the score: merely held before
   suppressed, the hold-down that ends first (the longest up) first, then the
   lowest flap penalty. Otherwise a blip that takes every path down at once (a
   starved prober) holds the alternatives too, and the score sends new flows
   back to a flapping path during its hold-down.
2. Among paths of the current choice's tier, the lowest score wins (Argo), with
   hysteresis: a candidate must be better than the current choice by both
   policy.switch_relative (of the current score) and policy.switch_absolute_ms,
   on both the raw and the smoothed score, continuously for Tuning.dwell probe
   intervals (so a single spike never switches). Going back to a path that was
   left for a better score needs that continuously for policy.hold_down_s.
3. Make-before-break: when the current choice turns suspect and a path of a
   better tier exists, new flows go there at once (weight), but the suspect
   path stays *up* in the datapath so its established flows stay pinned until
   the verdict. Only a down path (by our probes, or by its relay's report in
   fleet mode) is marked down: its flows move. If it recovers before the
   verdict, new flows go back to it at once, once per policy.hold_down_s (in
   doubt again sooner, like a path left for latency, it must win for a hold-down).
4. No measurements yet: "direct" if it is a candidate, else the first path.
   All paths down: keep the last choice, and keep it up (marking everything
   down would blackhole), so traffic resumes the moment it comes back.
5. policy.split: new flows are spread over the paths of the choice's tier
   whose smoothed score is within the switch margins of the best, weighted by
   1/score.
6. Common-mode silence: a path going down while every other path is silent
   too (or was, past its deadline), one since the same instant (half a detection
   time), is a stalled prober or host (or a dead uplink): down, not charged.

Score (milliseconds; lower is better), per path:

    base  = rtt + jitter_weight * jitter
    score = base / (1 - loss) + loss_cost_ms * loss / (1 - loss)      (Tuning)

i.e. the expected time to get a packet through when a lost packet is sent
again (ETX-like, as babeld's loss cost) and every loss also costs a
retransmission timeout (TCP's 200 ms minimum). The raw score uses the latest
RTT sample; the smoothed score uses srtt (RFC 6298 EWMA) smoothed once more
with a half-life of Tuning.smooth_half_life probe intervals (babeld smooths route
metrics the same way), so +-20% RTT noise does not cross the margins; a level
shift (Tuning.shift_samples raw scores in a row far on one side) restarts it,
so a sustained +100 ms moves traffic within about ten probes.

Hold-down: a path that went down may not be chosen (tier 1) until
policy.hold_down_s after it recovered. Flap damping (RFC 2439): each failure
(going down, or a passive failure: unanswered SYNs) adds Tuning.flap_penalty
to the path's penalty, which halves every flap_half_life_s; above
flap_suppress the path is suppressed (tier 1) until the penalty decays below
flap_reuse.

Sharing: destinations that measure the same thing on a path (same probe,
Config.measurement) share that path's estimator and scoring state, scored
once per decision time however many destinations read it; their decisions
(hysteresis, hold-down of a demoted path) stay their own.

Compiled: when argoctl._pathcore is built (pip install -e .), each path's
estimator and scoring state is one _pathcore.PathState, which does what
estimator.Estimator and _PathState.score do here, with the same arithmetic
(tests/unit/test_pathcore.py replays traces through both and compares every
decision). The per-destination choice below stays Python.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Hashable, Iterable, Optional, Sequence

from argoctl.config import Config, Policy, choice_of, first_weights
from argoctl.estimator import (DOWN as S_DOWN, SUSPECT as S_SUSPECT, UNKNOWN as S_UNKNOWN,
                               UP as S_UP, Estimator, Snapshot, State)

try:
    from argoctl import _pathcore
except ImportError:      # not built: the pure-Python estimator and score
    _pathcore = None

from argoctl.pathscore import *  # noqa: F401,F403
from argoctl.pathscore import (_ALL_UP, _NONE_DOWN, _NONE_UP, _PathState, _Scoring, _fmt,
                                _held_txt, _score_txt)


class Decision:
    """The datapath writer applies `weights`: per path (weight for new flows,
    up). A path with weight 0 keeps its established flows unless it is down.

    `reason` is given as text or as (str.format template, *args): most decisions
    keep the choice every round and nobody reads why, so the text is made when
    first read (the args are values fixed at decision time: same text)."""
    __slots__ = ("dest", "choice", "weights", "_reason", "scores", "changed", "at")

    def __init__(self, dest: str, choice: str, weights: dict[str, tuple[int, bool]],
                 reason, scores: dict[str, PathScore], changed: bool, at: float):
        self.dest = dest
        self.choice = choice
        self.weights = weights
        self._reason = reason
        self.scores = scores
        self.changed = changed
        self.at = at

    @property
    def reason(self) -> str:
        r = self._reason
        if r.__class__ is not str:
            r = self._reason = r[0].format(*r[1:])
        return r

    def __repr__(self) -> str:
        return (f"Decision(dest={self.dest!r}, choice={self.choice!r}, weights={self.weights!r}, "
                f"reason={self.reason!r}, scores={self.scores!r}, changed={self.changed!r}, "
                f"at={self.at!r})")

    def __eq__(self, other) -> bool:
        if other.__class__ is not Decision:
            return NotImplemented
        return ((self.dest, self.choice, self.weights, self.reason, self.scores, self.changed,
                 self.at) == (other.dest, other.choice, other.weights, other.reason,
                              other.scores, other.changed, other.at))

    __hash__ = None     # (as the dataclass it was: mutable, compared by value)

    def explain(self) -> str:
        lines = [f"{self.dest}: {self.choice} - {self.reason}"]
        for name, s in self.scores.items():
            w, up = self.weights[name]
            extra = []
            if s.held_until is not None:
                extra.append(f"held {s.held_until - self.at:.1f}s more")
            if s.penalty >= 1:
                extra.append(f"flap penalty {s.penalty:.0f}"
                             + (" suppressed" if s.suppressed else ""))
            lines.append(
                f"  {name:<14} {s.state.value:<8} {s.tier_name:<8} "
                f"score {_fmt(s.smoothed_ms)} (raw {_fmt(s.raw_ms)}) "
                f"loss {s.snapshot.loss:.0%} weight {w} {'up' if up else 'down'}"
                + (f" [{', '.join(extra)}]" if extra else ""))
        return "\n".join(lines)


_NO_MEASUREMENTS = "no measurements yet: {}"
_WAITING = "waiting for the first measurement of {}"
_STARTING = (_NO_MEASUREMENTS, _WAITING)


class _DestState:
    def __init__(self, name: str, paths: Sequence[str], policy: Policy, now: float,
                 path_state: Callable[[str], _PathState],
                 weights: Optional[Sequence[int]] = None):
        if not paths:
            raise ValueError(f"destination {name!r}: no paths")
        if len(set(paths)) != len(paths):
            raise ValueError(f"destination {name!r}: duplicate paths {list(paths)}")
        self.name = name
        self.started = now
        self.order = tuple(paths)
        self.paths = {p: path_state(p) for p in paths}
        # The first path set (config.first_weights: the rule `up` follows too);
        # configured weights are held until measurements decide.
        first = first_weights(self.order, tuple(weights) if weights else None)
        self.choice = choice_of(self.order, first)
        self.held_first = first if weights else None
        self.dwell: Optional[tuple[str, float]] = None   # (candidate, better since)
        # paths a return to needs a hold-down of being better -> why ("left for latency")
        self.demoted: dict[str, str] = {}
        self.diverted: Optional[str] = None   # suspect choice new flows were moved from
        self.undiverted: dict[str, float] = {}   # path -> when new flows last went back to it
        self.split: tuple[str, ...] = ()
        self.weights: dict[str, int] = {}
        self.last: Optional[Decision] = None


class Engine:
    def __init__(self, policy: Policy, destinations: Iterable[tuple[str, Sequence[str]]],
                 clock: Callable[[], float] = time.monotonic,
                 tuning: Optional[Tuning] = None,
                 groups: Optional[dict[tuple[str, str], Hashable]] = None,
                 native: Optional[bool] = None):
        """`groups`: (dest, path) -> a key; (dest, path)s with the same key measure the
        same thing (Config.measurement) and share one estimator and its score,
        so one probe result serves all of them. Absent: each its own.
        `native`: compiled path states (default: when argoctl._pathcore is built)."""
        self.policy = policy
        self.tuning = tuning or Tuning()
        self.clock = clock
        self.interval = policy.timing.interval_s
        self._grace = policy.timing.startup_grace_s
        self._rel, self._abs = policy.switch_relative, policy.switch_absolute_ms
        if native is None:
            native = _pathcore is not None
        elif native and _pathcore is None:
            raise RuntimeError("argoctl._pathcore is not built (pip install -e .)")
        self.native = native
        scoring = _Scoring(policy, self.tuning)
        now = clock()
        groups = groups or {}
        self._dests: dict[str, _DestState] = {}
        shared: dict[Hashable, _PathState] = {}
        self._fresh = lambda t: (_pathcore.PathState(policy, self.tuning, t) if native
                                 else _PathState(Estimator(policy, t), scoring))
        # Fleet mode (argoctl.fleet.agent): (dest, path, measured score, now) -> a
        # score from the bus for a path not measured end to end here, or None.
        self.overlay: Optional[Callable[[str, str, PathScore, float], Optional[PathScore]]] = None
        for name, paths, *weights in destinations:
            if name in self._dests:
                raise ValueError(f"duplicate destination {name!r}")

            def path_state(p: str, name=name) -> _PathState:
                key = groups.get((name, p))
                ps = shared.get(key) if key is not None else None
                if ps is None:
                    ps = self._fresh(now)
                    if key is not None:
                        shared[key] = ps
                ps.dests.append(name)
                return ps
            self._dests[name] = _DestState(name, paths, policy, now, path_state,
                                           weights[0] if weights else None)

    @classmethod
    def from_config(cls, cfg: Config, clock: Callable[[], float] = time.monotonic,
                    tuning: Optional[Tuning] = None) -> "Engine":
        groups = {(d.name, p): cfg.measurement(d, p) for d in cfg.destinations for p in d.paths}
        return cls(cfg.policy, [(d.name, d.paths, d.weights) for d in cfg.destinations], clock,
                   tuning, groups)

    # -- access ---------------------------------------------------------

    def path(self, dest: str, path: str) -> Estimator:
        """The estimator of (dest, path): feed it replies, timeouts, passive signals."""
        return self._dests[dest].paths[path].est

    def native_sink(self, dest: str, path: str):
        """The compiled PathState measuring (dest, path), which a compiled probe
        channel may feed directly (probe.ProbeScheduler's `sink`), or None."""
        return self._dests[dest].paths[path] if self.native else None

    def probe_result(self, dest: str, path: str, seq: int, sent_at_ns: int,
                     rtt: Optional[float], now_ns: int) -> bool:
        """probe.ProbeScheduler's on_result (times in ns, rtt in s or None).
        The engine's clock must be the same monotonic clock in seconds.
        True when the result changed the path's state (decide it now)."""
        est = self._dests[dest].paths[path].est      # (Estimator.on_result, inlined)
        before = est.state
        if rtt is None:
            est.on_timeout(seq, now_ns / 1e9)
        else:
            est.on_reply(seq, sent_at_ns / 1e9, rtt, now_ns / 1e9)
        return est.state is not before

    def sharers(self, dest: str, path: str) -> tuple[str, ...]:
        """The destinations whose (dest, path) measurement this one is: a result
        for it concerns all of them (at least `dest` itself)."""
        return tuple(self._dests[dest].paths[path].dests)

    def in_doubt(self, dest: str, path: str) -> bool:
        """probe.ProbeScheduler's in_doubt: probe this path faster."""
        return self.path(dest, path).in_doubt

    def on_path_passive(self, path: str, syn_sent: int, synack_rcvd: int,
                        rtt_samples: Sequence[float], now: float) -> None:
        """Datapath passive counters of one path (deltas), which the datapath
        keeps per path, not per destination: the SYN evidence goes to every
        destination through the path (SYN-ACKs from any of them clear it);
        handshake RTTs only when the path serves one destination, since they
        mix origins otherwise."""
        users = {id(d.paths[path]): d.paths[path] for d in self._dests.values()
                 if path in d.paths}
        for ps in users.values():
            ps.est.on_passive(syn_sent, synack_rcvd, rtt_samples if len(users) == 1 else (), now)

    def on_path_lost(self, path: str, now: float) -> list[str]:
        """`path` lost a kernel object it needs: down at once for every destination
        using it. Returns those destinations (decide them now)."""
        users = {id(d.paths[path]): d.paths[path] for d in self._dests.values()
                 if path in d.paths}
        for ps in users.values():
            ps.est.on_lost(now)
        return [n for n, d in self._dests.items() if path in d.paths]

    def pace(self, dest: str, path: str, n: int, now: float) -> None:
        """(dest, path)'s stream (and every destination sharing it) is probed
        every n intervals from now on: its detection times follow
        (Policy.timing_at, Estimator.pace). Only fleet mode paces streams."""
        self._dests[dest].paths[path].est.pace(n, self.policy.timing_at(n), now)

    def paths(self, dest: str) -> tuple[str, ...]:
        return self._dests[dest].order

    def restart(self, dest: str, path: str, now: Optional[float] = None) -> None:
        """Forget what was measured on (dest, path) and every destination sharing
        it: a fresh estimator (unknown, no flap penalty). For a path whose probing
        stopped and starts again (fleet mode): its old estimator went down by
        silence alone, which says nothing about the path. Rebind a compiled probe
        stream to the new state (native_sink) after this."""
        old = self._dests[dest].paths[path]
        ps = self._fresh(self.clock() if now is None else now)
        for name in old.dests:
            self._dests[name].paths[path] = ps
            ps.dests.append(name)

    def destinations(self) -> tuple[str, ...]:
        return tuple(self._dests)

    def seed_choice(self, dest: str, choice: str) -> None:
        """Start dest from `choice` instead of the default (hitless restart: the
        choice a previous run left in the maps). Before its first measurement
        the seeded path keeps traffic for the start-up grace, like direct."""
        d = self._dests[dest]
        if choice not in d.paths:
            raise ValueError(f"destination {dest!r}: no path {choice!r} (paths: {list(d.order)})")
        d.choice = choice
        d.held_first = None      # a previous run's decision stands, not the config's split

    def next_deadline(self) -> Optional[float]:
        """The earliest time an estimator changes state by time alone (due())."""
        return min((t for d in self._dests.values() for ps in d.paths.values()
                    if (t := ps.est.next_deadline()) is not None), default=None)

    def due(self, now: float) -> tuple[set[str], Optional[float]]:
        """(destinations with a path changing state by time alone by `now`, the next
        such time): decided at their deadline, as BFD's hold timer fires at the last
        packet + detection time, not at the next periodic decision."""
        dests, nxt = set(), None
        for d in self._dests.values():
            for ps in d.paths.values():
                if (t := ps.est.next_deadline()) is not None:
                    if t <= now:
                        dests.add(d.name)
                    elif nxt is None or t < nxt:
                        nxt = t
        return dests, nxt

    def last(self, dest: str) -> Optional[Decision]:
        """The latest decision for dest (None before the first decide())."""
        return self._dests[dest].last

    # -- deciding -------------------------------------------------------

    def decide(self, now: Optional[float] = None) -> dict[str, Decision]:
        """Tick every estimator and decide every destination."""
        if now is None:
            now = self.clock()
        return {name: self._decide(d, now) for name, d in self._dests.items()}

    def decide_one(self, dest: str, now: Optional[float] = None) -> Decision:
        return self._decide(self._dests[dest], self.clock() if now is None else now)

    def _decide(self, d: _DestState, now: float) -> Decision:
        paths = d.paths
        for p in d.order:
            est = paths[p].est
            est.tick(now)
            if est.fresh_down:
                self._judge(d, est)
        scores = {p: paths[p].score(p, now) for p in d.order}
        overlay = self.overlay
        if overlay is not None:
            for p in d.order:
                s = overlay(d.name, p, scores[p], now)
                if s is not None:
                    scores[p] = s
        choice, reason = self._choose(d, scores, now)
        d.choice = choice
        if d.held_first is not None and type(reason) is tuple and reason[0] in _STARTING:
            weights = d.held_first           # the configured split, until measured
        else:
            weights = self._weights(d, scores, choice)
        prev = d.last
        if prev is None or prev.choice != choice:
            changed = True
        elif prev.weights == weights:
            # The same dict again: the new one is freed at once instead of
            # living (and being walked by the garbage collector) a round.
            weights, changed = prev.weights, False
        else:
            changed = True
        dec = Decision(d.name, choice, weights, reason, scores, changed, now)
        d.last = dec
        return dec

    def _judge(self, d: _DestState, est) -> None:
        """Rule 6: common-mode or the path's own? (shared: the first dest judges) Others
        silent since the same instant: still, or past our deadline (after a stall)."""
        since, slack = est.silent_since, est.detect / 2
        together = False
        if since is not None:
            for q in d.order:
                other = d.paths[q].est
                if other is est:
                    continue
                s = other.silent_since
                if s is None or s < since - slack:
                    continue            # never answered, or dead long before
                together = s <= since + slack
                if not together:        # it answered after: silent past our deadline?
                    g = other.gap_from
                    if g is None or abs(g - since) > slack or other.gap_to <= since + est.detect:
                        break
                    together = True
        est.judge(together)

    def _margin(self, score: float) -> float:
        return max(self.policy.switch_relative * score, self.policy.switch_absolute_ms)

    def _choose(self, d: _DestState, scores: dict[str, PathScore], now: float) -> tuple[str, object]:
        # Runs for every destination every round: one pass over the scores,
        # and reasons as (template, *args) that Decision.reason formats if read.
        choice = d.choice
        cur = scores[choice]
        best_tier, unknown_only = DOWN + 1, True
        for s in scores.values():
            tier = s.tier
            if tier < best_tier:
                best_tier = tier
            if tier != UNKNOWN:
                unknown_only = False
        if best_tier == DOWN:
            d.dwell = None
            return choice, ("all paths down: keep the last choice {} up", choice)
        if unknown_only:
            return choice, (_NO_MEASUREMENTS, choice)
        if cur.tier == UNKNOWN and now - d.started < self._grace:
            # Start-up: give the default path its first round trip before
            # moving to whichever path happened to answer first.
            return choice, (_WAITING, choice)
        back = self._undivert(d, scores, cur, now)
        if back is not None:
            return back
        if best_tier == HELD and cur.tier == HELD:
            # Every usable path is held (a common-mode blip, a starved prober, took the
            # alternatives down too): the hold-down still ranks them, not the score.
            best = _best(scores, HELD, None)
            if best.path != choice:
                d.dwell = None
                d.diverted = None
                return best.path, ("{} held down longer than {}: {} ({})", choice, best.path,
                                   best.path, _held_txt(best, now))
            return choice, ("keep {}: every usable path is held, and {} the least ({})",
                            choice, choice, _held_txt(cur, now))
        if cur.tier > best_tier:
            best = _best(scores, best_tier, None)
            d.dwell = None
            d.demoted.pop(best.path, None)
            if cur.tier == SUSPECT:
                d.diverted = d.diverted or cur.path
            else:
                d.diverted = None
            return best.path, self._why_leave(cur, best)
        if best_tier > HELD:
            return choice, ("keep {}: every path is {}", choice, TIER_NAMES[best_tier])
        # Same tier: hysteresis against the best alternative.
        cand = _best(scores, best_tier, cur.path)
        if cand is None or cand.smoothed_ms is None:
            d.dwell = None
            return choice, ("keep {}: {}", choice, self._only(cur))
        cur_s, cur_r, cand_r = cur.smoothed_ms, cur.raw_ms, cand.raw_ms
        gain_s = cur_s - cand.smoothed_ms
        gain_r = (cur_r - cand_r) if cur_r is not None and cand_r is not None else 0.0
        rel, absolute = self._rel, self._abs
        need_s = rel * cur_s
        if need_s < absolute:
            need_s = absolute
        if cur_r is None:
            need_r = math.inf
        else:
            need_r = rel * cur_r
            if need_r < absolute:
                need_r = absolute
        if gain_s < need_s or gain_r < need_r:
            d.dwell = None
            return choice, ("keep {} ({:.1f} ms): {} better by {:.1f} ms smoothed, {:.1f} ms raw; "
                            "margins {:.1f}/{:.1f} ms",
                            choice, cur_s, cand.path, gain_s, gain_r, need_s, need_r)
        if d.dwell is None or d.dwell[0] != cand.path:
            d.dwell = (cand.path, now)
        held_for = now - d.dwell[1]
        dwell = self.tuning.dwell * self.interval
        why = ""
        if cand.path in d.demoted:
            # We left it for being slower (or for doubting again and again):
            # it must be better for a hold-down.
            dwell = max(dwell, self.policy.hold_down_s)
            why = f" (hold-down: {d.demoted[cand.path]})"
        if held_for + 1e-9 < dwell:
            return choice, ("keep {}: {} better by {:.1f} ms (raw {:.1f}) for {:.1f}s of {:.1f}s{}",
                            choice, cand.path, gain_s, gain_r, held_for, dwell, why)
        d.dwell = None
        d.diverted = None
        d.demoted.pop(cand.path, None)
        d.demoted[cur.path] = "left for latency"
        return cand.path, ("switch {} -> {}: better by {:.1f} ms smoothed ({:.1f} -> {:.1f}), "
                           "{:.1f} ms raw, for {:.1f}s{}",
                           choice, cand.path, gain_s, cur_s, cand.smoothed_ms, gain_r, held_for,
                           why)

    def _undivert(self, d: _DestState, scores: dict[str, PathScore],
                  cur: PathScore, now: float) -> Optional[tuple[str, str]]:
        """Make-before-break diverted new flows away from a suspect choice. If
        it recovers before being declared down, it was never replaced: new
        flows go back at once (no dwell), once per hold-down: a path in doubt
        again within hold_down_s of the last return (loss, or timeouts at the
        edge of its RTT) would bounce new flows every few probes, so the
        diversion stands and the path must win on score for a hold-down, as a
        path left for latency. If it goes down, the diversion was a failover
        after all."""
        if d.diverted is None or d.diverted == cur.path:
            d.diverted = None
            return None
        orig = scores[d.diverted]
        if orig.state is State.DOWN:
            d.diverted = None
            return None
        if orig.tier == USABLE and orig.tier <= cur.tier:
            d.diverted, d.dwell = None, None
            last = d.undiverted.get(orig.path)
            if last is not None and now - last < self.policy.hold_down_s:
                d.demoted[orig.path] = (f"in doubt again {now - last:.1f}s after new flows "
                                        "came back")
                return None
            d.undiverted[orig.path] = now
            return orig.path, (f"{orig.path} up again before the verdict: new flows back "
                               f"from {cur.path} (make-before-break ends)")
        return None

    def _why_leave(self, cur: PathScore, best: PathScore) -> str:
        to = f"{best.path} ({best.tier_name}{_score_txt(best)})"
        snap = cur.snapshot
        if cur.tier == DOWN:
            return f"failover {cur.path} -> {to}: {cur.path} down"
        if cur.tier == SUSPECT:
            return (f"make-before-break: {cur.path} suspect ({snap.consecutive_miss} misses, "
                    f"{snap.consecutive_ok} ok): new flows to {to}; {cur.path} stays up "
                    "for its established flows")
        if cur.tier == UNKNOWN:
            return f"{cur.path} not measured yet: {to}"
        why = "suppressed (flapping)" if cur.suppressed else "held down"
        return f"{cur.path} {why}: {to}"

    def _only(self, cur: PathScore) -> str:
        return f"the only {cur.tier_name} path{_score_txt(cur)}"

    def _weights(self, d: _DestState, scores: dict[str, PathScore],
                 choice: str) -> dict[str, tuple[int, bool]]:
        members = self._split_members(d, scores, choice) if self.policy.split else (choice,)
        if len(members) == 1:
            # One path takes all new flows (the common case, and the only one
            # without policy.split): no split arithmetic.
            if d.split != members:
                d.split, d.weights = members, {choice: TOTAL_WEIGHT}
            return {p: _ALL_UP if p == choice else
                    (_NONE_DOWN if _down(s) else _NONE_UP)
                    for p, s in scores.items()}
        split = self._split_weights(d, scores, members)
        d.split, d.weights = members, split
        # Down paths are marked down (their flows move); the rest stay up so pinned
        # flows stay. The choice is always up: all down, we keep it (no blackhole).
        return {p: (split.get(p, 0), not _down(scores[p]) or p == choice) for p in d.order}

    def _split_members(self, d: _DestState, scores: dict[str, PathScore],
                       choice: str) -> tuple[str, ...]:
        tier = scores[choice].tier
        pool = [s for s in scores.values()
                if s.tier == tier and tier in (USABLE, HELD) and s.smoothed_ms is not None]
        if len(pool) < 2:
            return (choice,)
        best = min(s.smoothed_ms for s in pool)
        margin = self._margin(best)
        members = []
        for s in pool:
            # Join within the margin; once in, stay until twice the margin.
            limit = 2 * margin if s.path in d.split else margin
            if s.path == choice or s.smoothed_ms - best <= limit:
                members.append(s.path)
        return tuple(p for p in d.order if p in members)

    def _split_weights(self, d: _DestState, scores: dict[str, PathScore],
                       members: tuple[str, ...]) -> dict[str, int]:
        step = self.tuning.split_step
        inv = {p: 1.0 / max(scores[p].smoothed_ms, 1e-3) for p in members}
        total = sum(inv.values())
        w = {p: max(step, int(round(TOTAL_WEIGHT * v / total / step)) * step)
             for p, v in inv.items()}
        top = max(w, key=w.get)
        w[top] += TOTAL_WEIGHT - sum(w.values())
        # Keep the previous split unless it moved noticeably: fewer map writes.
        if (set(d.weights) == set(w)
                and max(abs(d.weights[p] - w[p]) for p in w) < 2 * step):
            return d.weights
        return w


def _down(s: PathScore) -> bool:
    """Pinned flows move: down by our probes, or by the fleet overlay (unprobed)."""
    return s.state is S_DOWN or s.tier == DOWN


def _best(scores: dict[str, PathScore], tier: int, skip: Optional[str]) -> Optional[PathScore]:
    """The lowest smoothed score of `tier` (measured before unmeasured; the
    earlier path on a tie: `scores` is in path order), leaving out `skip`.
    For the same-tier alternative (skip = the choice) an unmeasured result means
    no measured alternative exists. Held paths rank by their hold-down instead
    (_held_rank): the one closest to usable, never a flapping one by its score."""
    if tier == HELD:
        held = [s for s in scores.values() if s.tier == HELD and s.path != skip]
        return min(held, key=_held_rank) if held else None
    best = None
    for s in scores.values():
        if s.tier != tier or s.path == skip:
            continue
        if best is None:
            best = s
        else:
            v = s.smoothed_ms
            if v is not None and (best.smoothed_ms is None or v < best.smoothed_ms):
                best = s
    return best


def _held_rank(s: PathScore) -> tuple:
    """Among held paths: merely held ones first, the hold-down that ends first
    (up the longest since its last failure) before the others; then suppressed
    (flapping) ones, the lowest flap penalty first. min() keeps path order on a tie."""
    if s.suppressed:
        return (1, s.penalty)
    return (0, -math.inf if s.held_until is None else s.held_until)


if _pathcore is not None:
    _pathcore.use(states=(S_UNKNOWN, S_UP, S_SUSPECT, S_DOWN), snapshot=Snapshot,
                  pathscore=PathScore)
