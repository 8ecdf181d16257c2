"""What this agent knows of the fleet: members, the others' legs, and relay paths
composed from them. Pure (no I/O, wall-clock time passed in), so tests replay it.

    view = FleetView("edge", ttl_s=15, probes={"origin": "udp:203.0.113.10:7447"})
    view.ingest_legs(key, raw, now)           # every bus update (counted if rejected)
    est = view.compose("relay1", "origin", now)   # leg(self->R) + leg(R->D) + overhead(R)

Composition (docs/fleet.md): a relay path R -> D is estimated as my tunnel leg to
R (measured here; else R's published leg to me, RTTs being round trips) plus R's
published direct leg to D plus an overhead learned per relay from the end-to-end
measurements this host still makes (an EWMA of e2e - the two legs: forwarding,
masquerading, and whatever the legs miss). Nothing older than the TTL is used:
a leg is dropped `ttl_s` after it was measured, even if the bus still holds it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional

from argoctl.fleet.schema import REASONS, Leg, Member, Rejected, parse_legs, parse_member

OVERHEAD_ALPHA = 0.1
OVERHEAD_LIMIT_MS = 1000.0


@dataclass(frozen=True, slots=True)
class Composed:
    """A relay path's estimate from the bus (not measured end to end here)."""
    relay: str
    dest: str
    state: str       # "up": both legs up; "suspect": one in doubt; "down": R's leg or the hop down
    rtt_ms: Optional[float]
    jitter_ms: float
    loss: float
    leg_rtt_ms: Optional[float]     # R -> D
    hop_rtt_ms: Optional[float]     # self -> R (None: unknown, counted as 0)
    overhead_ms: float
    at: float                       # the older leg's measurement time


class FleetView:
    def __init__(self, host: str, ttl_s: float, probes: dict[str, Optional[str]]):
        self.host = host
        self.ttl_s = ttl_s
        self.probes = dict(probes)                   # my destinations -> probe id
        self.members: dict[str, Member] = {}
        self.member_seen: dict[str, float] = {}      # host -> when (wall) we last heard it
        # (host, dest) -> Leg, and which shard key it came from (a host that
        # reshards leaves stale keys behind: the newest measurement wins)
        self.direct: dict[tuple[str, str], Leg] = {}
        self._shard_dests: dict[tuple[str, int], set[str]] = {}
        self.tunnel: dict[tuple[str, str], Leg] = {}   # (host, peer) -> Leg
        self.my_tunnel: dict[str, Leg] = {}            # peer -> my own tunnel leg (measured here)
        self.overhead: dict[str, float] = {}           # relay -> learned overhead (ms)
        self.overhead_samples: Counter = Counter()
        self.rejected: Counter = Counter({r: 0 for r in REASONS})
        self.accepted = 0

    # -- ingest ----------------------------------------------------------------------

    def _reject(self, e: Rejected) -> None:
        self.rejected[e.reason] += 1

    def ingest_member(self, key: str, raw: Optional[bytes], now: float) -> bool:
        """A membership update (raw None: deleted/expired). False if rejected."""
        if raw is None:
            self.members.pop(key, None)
            return True
        try:
            m = parse_member(key, raw, now, self.ttl_s)
        except Rejected as e:
            self._reject(e)
            return False
        self.members[key] = m
        self.member_seen[key] = now
        self.accepted += 1
        return True

    def ingest_legs(self, key: str, raw: Optional[bytes], now: float) -> bool:
        """A legs update (raw None: deleted/expired). False if the value was rejected
        (a value with some bad legs keeps its good ones; each bad one is counted)."""
        if raw is None:
            return self._forget(key)
        try:
            host, kind, shard, legs, bad = parse_legs(key, raw, now, self.ttl_s)
        except Rejected as e:
            self._reject(e)
            return False
        if host == self.host:
            return True          # our own echo: we know better
        for e in bad:
            self._reject(e)
        if kind == "t":
            for k in [k for k in self.tunnel if k[0] == host]:
                del self.tunnel[k]
            for peer, leg in legs.items():
                self.tunnel[(host, peer)] = leg
        else:
            old = self._shard_dests.get((host, shard), set())
            kept = set()
            for dest, leg in legs.items():
                mine = self.probes.get(dest, ...)
                if mine is not ... and leg.probe != mine:
                    self.rejected["mismatch"] += 1
                    continue
                prev = self.direct.get((host, dest))
                if prev is None or prev.at <= leg.at:
                    self.direct[(host, dest)] = leg
                kept.add(dest)
            for dest in old - kept:
                self.direct.pop((host, dest), None)
            self._shard_dests[(host, shard)] = kept
        self.accepted += 1
        return not bad

    def _forget(self, key: str) -> bool:
        parts = key.split(".")
        if len(parts) == 2 and parts[1] == "t":
            for k in [k for k in self.tunnel if k[0] == parts[0]]:
                del self.tunnel[k]
        elif len(parts) == 3 and parts[2].isdigit():
            for dest in self._shard_dests.pop((parts[0], int(parts[2])), set()):
                self.direct.pop((parts[0], dest), None)
        return True

    # -- reading -----------------------------------------------------------------------

    def fresh(self, leg: Optional[Leg], now: float) -> Optional[Leg]:
        return leg if leg is not None and now - leg.at <= self.ttl_s else None

    def leg(self, host: str, dest: str, now: float) -> Optional[Leg]:
        """`host`'s direct leg to `dest`, if fresh."""
        return self.fresh(self.direct.get((host, dest)), now)

    def hop(self, relay: str, now: float) -> Optional[Leg]:
        """self -> relay: my own tunnel leg, else the relay's published leg to me."""
        return (self.fresh(self.my_tunnel.get(relay), now)
                or self.fresh(self.tunnel.get((relay, self.host)), now))

    def live_members(self, now: float) -> dict[str, Member]:
        return {h: m for h, m in self.members.items() if now - m.at <= self.ttl_s}

    def compose(self, relay: str, dest: str, now: float) -> Optional[Composed]:
        """The estimate of dest through relay from the bus, or None (nothing fresh)."""
        leg = self.leg(relay, dest, now)
        if leg is None or leg.state == "unknown":
            return None
        ovh = self.overhead.get(relay, 0.0)
        hop = self.hop(relay, now)
        # A leg in doubt (suspect: a miss) still composes, its loss in the score;
        # a leg down, or without an RTT, makes the relay path down.
        if leg.state == "down" or leg.rtt_ms is None:
            return Composed(relay, dest, "down", None, leg.jitter_ms, leg.loss, leg.rtt_ms,
                            None, ovh, leg.at)
        if hop is not None and hop.state == "down":
            return Composed(relay, dest, "down", None, leg.jitter_ms, 1.0, leg.rtt_ms, None,
                            ovh, min(leg.at, hop.at))
        hop_rtt = hop.rtt_ms if hop is not None else None
        state = "up" if leg.up and (hop is None or hop.state in ("up", "unknown")) else "suspect"
        rtt = leg.rtt_ms + (hop_rtt or 0.0) + ovh
        loss = leg.loss
        jitter = leg.jitter_ms
        at = leg.at
        if hop is not None:
            loss = 1 - (1 - leg.loss) * (1 - hop.loss)
            jitter += hop.jitter_ms
            at = min(at, hop.at)
        return Composed(relay, dest, state, max(0.0, rtt), jitter, loss, leg.rtt_ms, hop_rtt,
                        ovh, at)

    def learn(self, relay: str, dest: str, e2e_ms: float, now: float) -> Optional[float]:
        """An end-to-end RTT through relay to dest measured here: the overhead the
        two legs miss, smoothed per relay (returns the new overhead, or None when
        the legs are not both known)."""
        leg = self.leg(relay, dest, now)
        hop = self.hop(relay, now)
        if leg is None or not leg.up or leg.rtt_ms is None:
            return None
        sample = e2e_ms - leg.rtt_ms - (hop.rtt_ms if hop is not None and hop.up else 0.0)
        sample = max(-OVERHEAD_LIMIT_MS, min(OVERHEAD_LIMIT_MS, sample))
        cur = self.overhead.get(relay)
        cur = sample if cur is None else cur + OVERHEAD_ALPHA * (sample - cur)
        self.overhead[relay] = cur
        self.overhead_samples[relay] += 1
        return cur

    def reachers(self, dest: str, now: float) -> dict[str, Leg]:
        """Every host whose fresh direct leg to dest is known (for `fleet status`)."""
        return {h: l for (h, d), l in self.direct.items()
                if d == dest and now - l.at <= self.ttl_s}
