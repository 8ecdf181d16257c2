"""Per-(destination, path) measurements: smoothed RTT, jitter, loss, reachability.

Pure Python, no I/O, no clock of its own: every input carries `now` (seconds,
monotonic float), so traces replay deterministically.

Inputs (the measurement loop calls them):

- `on_reply(seq, sent_at, rtt, now)`: a probe's reply arrived (rtt in seconds;
  None = now - sent_at).
- `on_timeout(seq, now)`: a probe got no reply within the timeout (or its send
  failed).
- `tick(now)`: time passes. Reachability is decided by time, not only by
  events: when replies stop, the path goes suspect and then down after
  detect_multiplier x probe_interval of silence even if no timeout arrives.
- `on_passive(syn_sent, synack_rcvd, rtt_samples, now)`: datapath counters since
  the previous call (deltas). SYNs left unanswered count against reachability
  (Cloudflare's 522); handshake RTTs feed the RTT estimate at a lower weight.

Both directions count: a reply counts only when the whole round trip
completed, through this path out and back. A path whose forward direction
works but whose return direction is broken therefore looks exactly like loss,
and is declared down like any other dead path.

Reachability state machine (BFD-like, RFC 5880 detection time):

    unknown --reply--> up
    up --first miss (timeout, silence, unanswered SYNs)--> suspect
    up/suspect --no reply for detect_multiplier x interval,
                 or detect_multiplier consecutive timeouts--> down
    suspect/down --recover_probes consecutive replies (and no
                   unanswered SYNs pending: a SYN-ACK clears them, and so do
                   PASSIVE_FORGET_S without new SYNs)--> up
    unknown --detect_multiplier consecutive timeouts--> down (never worked:
                   not counted as a failure)

A failure (down after having worked) is charged by the engine (flap damping,
and a hold-down once the path recovers) unless the engine excuses it
(`judge()`): every path of the destination went silent in the same instant,
which is the prober or the host stalling, not this path failing (engine rule 6).

RTT (RFC 6298): srtt += alpha (R - srtt), rttvar += beta (|srtt - R| - rttvar),
beta = 1/4, first sample srtt = R, rttvar = R/2. Jitter (RFC 3550):
J += (|R_i - R_(i-1)| - J) / 16 over consecutive active samples. Loss: lost
probes / resolved probes over the last loss_window probes; the window starts
afresh when a path recovers from down (the outage is not random loss: hold-down
and flap damping account for it).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Optional

from argoctl.config import Policy

RTT_BETA = 0.25            # RFC 6298
JITTER_GAIN = 1.0 / 16     # RFC 3550
PASSIVE_WEIGHT = 0.25      # handshake RTTs count this fraction of an active sample
PASSIVE_MIN_SYNS = 2       # unanswered SYNs needed before passive evidence counts
RECENT = 16                # active RTT samples kept for the engine's level-shift test
SYN_RTO_S = 1.0            # TCP retransmits an unanswered SYN after 1 s (RFC 6298)
# Unanswered-SYN evidence is forgotten after this long without any new SYN on
# the path: once new flows avoid it, only a SYN-ACK or silence can clear it.
PASSIVE_FORGET_S = 10.0


class State(str, enum.Enum):
    UNKNOWN = "unknown"    # no reply yet: never measured
    UP = "up"
    SUSPECT = "suspect"    # in doubt: a miss, or recovering towards up
    DOWN = "down"


# The members as module globals: the per-result and per-decision code compares
# states all the time, and an Enum class attribute costs several times a global.
UNKNOWN, UP, SUSPECT, DOWN = State.UNKNOWN, State.UP, State.SUSPECT, State.DOWN


@dataclass(slots=True)
class Snapshot:
    """What the engine (and `argoctl probe/explain`, metrics) reads. Times in
    seconds (same clock as `now`), RTTs in milliseconds. Read-only by
    convention (not frozen: one is built per path per decision, and frozen
    dataclasses cost twice as much to build; the estimator hands the same one
    out again until its version changes, so it must never be modified)."""
    state: State
    since: float                         # when the current state was entered
    srtt_ms: Optional[float]             # None until the first sample
    rttvar_ms: Optional[float]
    jitter_ms: float
    last_rtt_ms: Optional[float]         # the latest active sample (the raw metric)
    loss: float                          # 0..1 over the loss window
    last_reply: Optional[float]
    recovered_at: Optional[float]        # last down -> up transition (hold-down start)
    consecutive_ok: int
    consecutive_miss: int
    counts: dict = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.srtt_ms is not None


class Estimator:
    """Measurements of one (destination, path)."""

    def __init__(self, policy: Policy, now: float = 0.0):
        self.policy = policy
        t = policy.timing
        self.interval, self.detect, self.suspect_after = t.interval_s, t.detect_s, t.suspect_after_s
        self.pace_n = 1
        # unanswered SYNs are judged at the base detection time whatever the pace
        # of the active probes: they are evidence of their own
        self.passive_detect = t.detect_s
        # Silence counts from the last reply, or from the last change of pace if
        # later (pace()); never set without fleet mode.
        self._quiet_from = float("-inf")
        self.state = State.UNKNOWN
        self.since = now
        self.srtt: Optional[float] = None      # seconds
        self.rttvar: Optional[float] = None
        self.jitter = 0.0
        self.last_rtt: Optional[float] = None
        self.recent: deque[float] = deque(maxlen=RECENT)   # latest active RTTs (s)
        self.last_reply: Optional[float] = None
        # The latest silence of at least half a detection time that a reply
        # ended: (its start, as silent_since was, and that reply's time).
        self.gap_from: Optional[float] = None
        self.gap_to: Optional[float] = None
        self.recovered_at: Optional[float] = None
        self._failed = False   # down after having worked (not merely never up)
        self._excused = False  # ... but the engine excused it (common-mode silence)
        # A failure the engine has not yet judged (common-mode or this path's own)
        self.fresh_down = False
        self.consecutive_ok = 0
        self.consecutive_miss = 0
        # seq -> replied? for the last loss_window resolved probes, plus a
        # longer memory of resolved seqs so duplicates and late replies are
        # recognised (and ignored) after they leave the window. A plain dict
        # (insertion-ordered, oldest first): holding only ints and bools it is
        # not tracked by the garbage collector, which an OrderedDict is (and
        # then walked entry by entry at every full collection, for every path).
        self._window: deque[bool] = deque(maxlen=policy.loss_window)
        self._lost_in_window = 0
        self._resolved: dict[int, bool] = {}
        self._resolved_max = max(64, 4 * policy.loss_window)
        # Passive: balance of SYNs without a SYN-ACK since the last SYN-ACK.
        self._syn_unanswered = 0
        self._syn_pending_since: Optional[float] = None
        self._last_syn: Optional[float] = None
        self._passive_failing = False
        # Bumped by every input and by every change tick() makes: "has anything
        # changed since?" (the engine's score and the snapshot are cached by it).
        self.version = 0
        self._snap: Optional[Snapshot] = None
        self._snap_version = -1
        self.counts = {"replies": 0, "timeouts": 0, "late": 0, "duplicate": 0,
                       "syn_sent": 0, "synack_rcvd": 0, "passive_rtt": 0,
                       "passive_fail": 0, "suspects": 0, "downs": 0, "recoveries": 0,
                       "excused": 0}

    # -- inputs ---------------------------------------------------------

    def on_reply(self, seq: int, sent_at: float, rtt: Optional[float], now: float) -> None:
        # Runs for every probe result: _resolve and _rtt_sample are written out.
        self.version += 1
        if rtt is None:
            rtt = now - sent_at
        resolved = self._resolved
        if seq in resolved:
            # A duplicate, or a reply after its timeout was already counted as
            # loss: a late reply proves nothing about the path now.
            self.counts["duplicate" if resolved[seq] else "late"] += 1
            return
        window = self._window
        if len(window) == window.maxlen and not window[0]:
            self._lost_in_window -= 1
        window.append(True)
        resolved[seq] = True
        if len(resolved) > self._resolved_max:
            del resolved[next(iter(resolved))]
        self.counts["replies"] += 1
        if rtt < 0:
            rtt = 0.0
        last = self.last_rtt
        if last is not None:
            self.jitter += (abs(rtt - last) - self.jitter) * JITTER_GAIN
        self.last_rtt = rtt
        self.recent.append(rtt)
        srtt = self.srtt
        if srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar += (abs(srtt - rtt) - self.rttvar) * RTT_BETA
            self.srtt = srtt + (rtt - srtt) * self.policy.rtt_alpha
        last = self.last_reply
        if last is not None:
            if last < self._quiet_from:
                last = self._quiet_from
            if now - last >= self.detect * 0.5:
                # a silence this long ended: the engine's rule 6 may need it
                # after this reply (Estimator.gap)
                self.gap_from, self.gap_to = last, now
        self.last_reply = now
        self.consecutive_ok += 1
        self.consecutive_miss = 0
        state = self.state
        if state is UNKNOWN:
            self._enter(UP, now)
        elif state is SUSPECT or state is DOWN:
            self._maybe_recover(now)

    def on_timeout(self, seq: int, now: float) -> None:
        self.version += 1
        if seq in self._resolved:
            return  # already answered (or already counted)
        self._resolve(seq, False)
        self.counts["timeouts"] += 1
        self.consecutive_ok = 0
        self.consecutive_miss += 1
        if self.consecutive_miss >= self.policy.detect_multiplier:
            if self.state is not State.DOWN:
                self._enter(State.DOWN, now)
        elif self.state is State.UP:
            self._enter(State.SUSPECT, now)

    def on_lost(self, now: float) -> None:
        """What the path rides on is gone (its tunnel, route or rule, seen by the
        daemon's watch): down now, as after detect_multiplier lost probes. It comes
        back only by the usual recovery (recover_probes replies in a row). The
        failure is the path's own, never a stall (rule 6): the others just answered,
        so the engine would call it common-mode; it is charged as judged."""
        self.version += 1
        self.consecutive_ok = 0
        self.consecutive_miss = max(self.consecutive_miss, self.policy.detect_multiplier)
        self._enter(State.DOWN, now)
        self.fresh_down = False

    def on_result(self, seq: int, sent_at: float, rtt: Optional[float], now: float) -> None:
        """One probe's outcome: rtt in seconds, or None when it was lost."""
        if rtt is None:
            self.on_timeout(seq, now)
        else:
            self.on_reply(seq, sent_at, rtt, now)

    def pace(self, n: int, timing, now: float) -> None:
        """This stream is probed every n intervals from now on (fleet mode:
        argoctl/fleet/rates.py owns the rule): detection follows the stream's own
        interval (Policy.timing_at). A change of pace restarts the silence count
        at `now`, as BFD applies a new detection time from the change on: a stream
        sped up after 8 quiet seconds at a slow pace is not down at once, it gets
        its new detection time to answer (the prober polls it at once)."""
        if n == self.pace_n:
            return
        t = timing           # self.policy.timing_at(n), from the caller (as _pathcore)
        self.interval, self.detect, self.suspect_after = t.interval_s, t.detect_s, t.suspect_after_s
        self.pace_n = n
        self._quiet_from = now
        self.version += 1

    @property
    def silent_since(self) -> Optional[float]:
        """Since when silence counts (the last reply, or a later change of pace);
        None before the first reply."""
        last = self.last_reply
        if last is None:
            return None
        return last if last >= self._quiet_from else self._quiet_from

    def judge(self, common_mode: bool) -> None:
        """The engine's verdict on a fresh failure (`fresh_down`). common_mode:
        every path of the destination went silent in the same instant (a
        stalled prober or host): the path stays down until it answers again,
        but the failure is not charged: counts["excused"] takes it back from
        counts["downs"] for flap damping, and its recovery starts no hold-down.
        Otherwise the failure stands (charged as every failure is)."""
        self.fresh_down = False
        if common_mode and self.state is DOWN and self._failed and not self._excused:
            self._excused = True
            self.counts["excused"] += 1
            self.version += 1

    def tick(self, now: float) -> None:
        """Time-based detection; call before reading a snapshot."""
        state, last = self.state, self.last_reply
        if (state is UP or state is SUSPECT) and last is not None:
            if last < self._quiet_from:
                last = self._quiet_from
            # Absolute times, computed as next_deadline() does, so deciding at
            # a deadline always sees the transition.
            if now >= last + self.detect:
                self.consecutive_ok = 0
                self._enter(DOWN, now)
            elif now >= last + self.suspect_after and state is UP:
                self.consecutive_ok = 0
                self._enter(SUSPECT, now)
        if self._passive_failing or self._syn_pending_since is not None:
            self._check_passive(now)    # (a no-op without passive evidence)

    def on_passive(self, syn_sent: int, synack_rcvd: int,
                   rtt_samples: Iterable[float], now: float) -> None:
        """Datapath deltas since the previous call. rtt_samples in seconds (if the
        datapath keeps sum/count, pass [sum/count] for a non-zero count)."""
        self.version += 1
        self.counts["syn_sent"] += syn_sent
        if syn_sent:
            self._last_syn = now
        self.counts["synack_rcvd"] += synack_rcvd
        for r in rtt_samples:
            self.counts["passive_rtt"] += 1
            self._rtt_sample(max(0.0, r), PASSIVE_WEIGHT)
        if synack_rcvd > 0:
            # The path completes handshakes: whatever was unanswered was in
            # flight (or a retransmission). Clear the passive evidence.
            self._syn_unanswered = max(0, self._syn_unanswered + syn_sent - synack_rcvd)
            self._syn_pending_since = now if self._syn_unanswered else None
            if self._passive_failing:
                self._passive_failing = False
                if self.state in (State.SUSPECT, State.DOWN):
                    self._maybe_recover(now)
        elif syn_sent > 0:
            self._syn_unanswered += syn_sent
            if self._syn_pending_since is None:
                self._syn_pending_since = now
        self._check_passive(now)

    # -- outputs --------------------------------------------------------

    def next_deadline(self) -> Optional[float]:
        """When tick() would next change the state by time alone (silence, or
        passive evidence maturing or ageing out), or None. The loop arms a timer
        for it, so a dead path is declared down at detection time, not at the
        next periodic decision."""
        times = []
        if self.state in (State.UP, State.SUSPECT) and self.last_reply is not None:
            last = max(self.last_reply, self._quiet_from)
            if self.state is State.UP:
                times.append(last + self.suspect_after)
            times.append(last + self.detect)
        if self._passive_failing:
            times.append(self._last_syn + PASSIVE_FORGET_S)
        elif self._syn_pending_since is not None and self._syn_unanswered >= PASSIVE_MIN_SYNS:
            times.append(self._syn_pending_since + max(self.passive_detect, SYN_RTO_S))
        return min(times) if times else None

    @property
    def loss(self) -> float:
        return self._lost_in_window / len(self._window) if self._window else 0.0

    @property
    def in_doubt(self) -> bool:
        """For the prober: probe faster while this is true: a verdict or a
        recovery is pending. A path that stays dead is probed at the normal
        rate (a dead relay must not quadruple the probe load for good)."""
        s = self.state
        return (s is State.SUSPECT or s is State.UNKNOWN
                or (s is State.DOWN and self.consecutive_ok > 0))

    def snapshot(self) -> Snapshot:
        """The current measurements; the same object until the version changes."""
        if self._snap_version == self.version:
            return self._snap
        srtt, rttvar, last, window = self.srtt, self.rttvar, self.last_rtt, self._window
        # Positional (the field order of Snapshot): the engine builds one per
        # path per decision.
        snap = Snapshot(self.state, self.since,
                        None if srtt is None else srtt * 1000.0,
                        None if rttvar is None else rttvar * 1000.0,
                        self.jitter * 1000.0,
                        None if last is None else last * 1000.0,
                        self._lost_in_window / len(window) if window else 0.0,
                        self.last_reply, self.recovered_at, self.consecutive_ok,
                        self.consecutive_miss, self.counts.copy())
        self._snap, self._snap_version = snap, self.version
        return snap

    # -- internals ------------------------------------------------------

    def _rtt_sample(self, r: float, weight: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = r, r / 2
            return
        self.rttvar += (abs(self.srtt - r) - self.rttvar) * RTT_BETA * weight
        self.srtt += (r - self.srtt) * self.policy.rtt_alpha * weight

    def _resolve(self, seq: int, ok: bool) -> None:
        if len(self._window) == self._window.maxlen and not self._window[0]:
            self._lost_in_window -= 1
        self._window.append(ok)
        if not ok:
            self._lost_in_window += 1
        self._resolved[seq] = ok
        if len(self._resolved) > self._resolved_max:
            del self._resolved[next(iter(self._resolved))]

    def _check_passive(self, now: float) -> None:
        if self._passive_failing:
            if now >= self._last_syn + PASSIVE_FORGET_S:
                self._passive_failing = False
                self.version += 1
                self._syn_unanswered, self._syn_pending_since = 0, None
                if self.state in (State.SUSPECT, State.DOWN):
                    self._maybe_recover(now)
            return
        if (self._syn_pending_since is None
                or self._syn_unanswered < PASSIVE_MIN_SYNS
                or now < self._syn_pending_since + max(self.passive_detect, SYN_RTO_S)):
            return
        self._passive_failing = True
        self.version += 1
        self.counts["passive_fail"] += 1
        if self.state is State.UP:
            self.consecutive_ok = 0
            self._enter(State.SUSPECT, now)

    def _maybe_recover(self, now: float) -> None:
        if self.consecutive_ok >= self.policy.recover_probes and not self._passive_failing:
            failed, self._failed = self._failed, False
            excused, self._excused = self._excused, False
            self.fresh_down = False
            self._enter(State.UP, now)
            if failed:
                if not excused:
                    self.recovered_at = now
                    self.counts["recoveries"] += 1
                # The outage is accounted for by hold-down and flap damping;
                # left in the loss window it would also read as random loss.
                self._window.clear()
                self._lost_in_window = 0

    def _enter(self, state: State, now: float) -> None:
        if state is self.state:
            return
        self.version += 1      # (tick() changes state without an input)
        if state is State.DOWN and self.state is not State.UNKNOWN:
            self.counts["downs"] += 1   # a failure: flap damping and hold-down count it
            self._failed = True
            self.fresh_down = True
        if state is State.SUSPECT:
            self.counts["suspects"] += 1
        self.state = state
        self.since = now
