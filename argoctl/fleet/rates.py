"""Fleet mode's per-stream probe rates: the one place that decides how often each
end-to-end stream is probed (every `pace` probe intervals). The interval itself
and the detection times that follow from a pace belong to the policy
(Policy.timing_at); the estimator, its compiled twin and the prober take the
pace from here (FleetAgent.apply_paces).

Without fleet mode (or in local mode) every stream is probed at pace 1: today's
single-host behaviour. In fleet mode, per destination (docs/fleet.md, "Rates"):

- **Demand** (RFC 5880 BFD Demand mode: when connectivity is verified by other
  means, periodic probes stop): the choice carries real TCP, and the datapath's
  passive counters of its path show handshakes completing (SYN-ACKs within
  FRESH_INTERVALS, no SYN left unanswered since): a slow end-to-end check every
  DEMAND_PACE intervals keeps its RTT and catches what per-path counters cannot
  attribute to one destination. Without such evidence the choice is probed at
  the full rate, unless the destination is idle.
- **Idle**: no packet to the destination went through this host's datapath for
  FRESH_INTERVALS (a relay's own destinations, usually): its choice protects no
  traffic here, and what its probes feed is the leg published for the others,
  so it is checked like this host's direct leg when not chosen (`check_pace`).
  The first packet ends it: full rate, with a poll, at the next round. A relay
  that loses the origin then says so within about one check plus a timeout, not
  one probe interval; an edge does not wait for that: it verifies a relay path
  end to end before moving traffic onto it.
- **Check**: the other streams of the plan (this host's direct leg, which the
  others compose with, and the k alternatives) every `check_pace` intervals, a
  relay path only while its composed estimate (relay's published leg + tunnel
  leg + learned overhead) is fresh and up.
- **Full rate** (pace 1), at once, with a probe sent now (a poll):
  - a stream in doubt (unknown, suspect, or down but answering again);
  - every stream of a destination whose choice is not up, or whose choice's
    passive evidence turned bad (SYNs unanswered): the failover target is
    verified end to end at the full rate, as without fleet mode;
  - a path about to be chosen: measured or composed better than the choice by
    the switch margins (make-before-break verifies it end to end first);
  - a relay path whose composition is missing, stale, or not up.

A stream's detection times follow its pace (Estimator.pace): suspect after one
of its intervals plus a timeout, down after detect_multiplier of its intervals.
"""

from __future__ import annotations

from typing import Callable, Optional

from argoctl.estimator import State

DIRECT = "direct"
DEMAND_PACE = 10          # the choice, vouched for by real traffic
CHECK_PACE = 8            # alternatives with a fresh composed estimate, the direct leg
FRESH_INTERVALS = 2.0     # passive evidence older than this many intervals is not fresh
LOOKS = 4                 # looks per interval at the SYN counters of choices on demand


def check_pace(interval_s: float, ttl_s: float) -> int:
    """Slow checks at most every CHECK_PACE intervals, and often enough that the
    leg this host publishes from them (its direct leg, its tunnel legs) is
    measured at least twice per TTL: readers drop a leg ttl_s after it was
    measured."""
    return max(1, min(CHECK_PACE, int(ttl_s / (2.0 * interval_s))))


class Evidence:
    """Passive evidence per path from the datapath's SYN / SYN-ACK counters (kept
    per path, not per destination: every destination through a path shares it).
    Good: a poll with SYN-ACKs and no SYN left unanswered; bad: a poll with more
    SYNs than SYN-ACKs (a handshake lost, or still in flight: a false alarm costs
    one round of full-rate probing, never a missed failure)."""

    def __init__(self, interval_s: float):
        self.fresh_s = FRESH_INTERVALS * interval_s
        self.last_good: dict[str, float] = {}
        self.bad: dict[str, float] = {}          # path -> since when
        # dest -> when its last packet was seen (None: none since watched);
        # a destination never reported on is not idle (traffic unknown)
        self.traffic: dict[str, Optional[float]] = {}
        self._looked: dict[str, tuple[int, int]] = {}   # look(): counters at the last look

    def on_passive(self, path: str, syn: int, synack: int, now: float) -> None:
        if syn > synack:
            self.bad.setdefault(path, now)
        elif synack > 0:
            self.last_good[path] = now
            self.bad.pop(path, None)

    def look(self, paths: set[str], read: Callable[[str], tuple[int, int]]) -> bool:
        """Between rounds, LOOKS times an interval: the cumulative (SYNs, SYN-ACKs)
        of `paths` (the choices on demand). True when one sent a SYN since the
        last look that is not answered yet: the daemon then runs its round at
        once, whose own counters decide (a SYN answered meanwhile is no alarm).
        Without it, traffic that stops being answered on a choice probed every
        DEMAND_PACE intervals waited up to a round to be noticed."""
        hit = False
        looked = {}
        for p in paths:
            looked[p] = cur = read(p)
            prev = self._looked.get(p)
            hit |= prev is not None and cur[0] - prev[0] > cur[1] - prev[1]
        self._looked = looked
        return hit

    def fresh(self, path: str, now: float) -> bool:
        t = self.last_good.get(path)
        return path not in self.bad and t is not None and now - t <= self.fresh_s

    def failing(self, path: str) -> bool:
        return path in self.bad

    def on_traffic(self, dest: str, packets: int, now: float) -> None:
        """Packets steered to `dest` by the datapath since the last poll."""
        if packets > 0:
            self.traffic[dest] = now
        else:
            self.traffic.setdefault(dest, None)

    def idle(self, dest: str, now: float) -> bool:
        if dest not in self.traffic:
            return False
        t = self.traffic[dest]
        return t is None or now - t > self.fresh_s


def in_doubt(dec) -> bool:
    """The destination's choice is not verified: not up (or suspect)."""
    s = dec.scores.get(dec.choice)
    return s is None or s.state is not State.UP


def _margin(policy, score: float) -> float:
    return max(policy.switch_relative * score, policy.switch_absolute_ms)


def _beats(policy, cur, smoothed: Optional[float], raw: Optional[float]) -> bool:
    """A candidate (its smoothed and raw score) better than the choice `cur` as
    the engine's rule 2 (engine.py) needs it to switch: by the margins on the
    smoothed score and on the raw one. A choice checked every DEMAND_PACE
    intervals keeps a high smoothed score long after one slow reply; the engine
    does not switch for that, so nothing is about to be chosen."""
    if None in (cur.smoothed_ms, cur.raw_ms, smoothed, raw):
        return False                   # (the engine: no switch without both scores)
    return (cur.smoothed_ms - smoothed >= _margin(policy, cur.smoothed_ms)
            and cur.raw_ms - raw >= _margin(policy, cur.raw_ms))


def paces(dec, probed: set[str], policy, check: int, evidence: Evidence, now: float,
          compose: Callable[[str], Optional[object]], relays: set[str]) -> dict[str, int]:
    """{path: pace} for the probed paths of one destination's decision `dec`.
    `compose(path)`: the composed estimate of a relay path (view.compose) or None."""
    choice = dec.choice
    cur = dec.scores.get(choice)
    if in_doubt(dec) or evidence.failing(choice):
        return {p: 1 for p in probed}
    out = {}
    for p in probed:
        s = dec.scores.get(p)
        if s is None or s.state is State.UNKNOWN or s.state is State.SUSPECT:
            out[p] = 1
            continue
        snap = s.snapshot
        if s.state is State.DOWN:
            # a dead alternative is checked slowly; one that answers again is in
            # doubt and verified at the full rate
            out[p] = 1 if snap.consecutive_ok > 0 else check
            continue
        if p == choice:
            out[p] = (DEMAND_PACE if evidence.fresh(p, now)
                      else check if evidence.idle(dec.dest, now) else 1)
            continue
        if _beats(policy, cur, s.smoothed_ms, s.raw_ms):
            out[p] = 1                     # about to be chosen: verify at full rate
            continue
        if p in relays:
            c = compose(p)
            if c is None or c.state != "up" or c.rtt_ms is None:
                out[p] = 1                 # nothing fresh vouches for it between checks
                continue
            ms = (c.rtt_ms + c.jitter_ms)
            if _beats(policy, cur, ms, ms):
                out[p] = 1                 # on paper about to win: verify it
                continue
        out[p] = check
    return out


def peer_pace(state: State, check: int) -> int:
    """A tunnel leg (ICMP to the peer's tunnel address): checked every `check`
    intervals while up, at the full rate while in doubt."""
    return check if state is State.UP else 1
