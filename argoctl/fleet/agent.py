"""The daemon's fleet cell: the bus, this host's records on it, the fleet view, and
what the engine and the prober do differently in fleet mode.

    fleet = FleetAgent(cfg, engine)      # cfg.fleet set
    await fleet.start()                  # in the daemon's loop; never fails on NATS
    engine.overlay = fleet.overlay       # unprobed relay paths scored from the bus
    wanted = fleet.plan(decisions, now)  # (dest, path)s to probe end to end
    fleet.tick(now)                      # publish (rate-limited), learn overheads
    await fleet.stop()

Modes: "fleet" while the bus is healthy, else "local": every path probed end to
end and no composed estimate used (today's single-host behaviour). The switch to
local happens the moment the client loses its connection, or at the latest after
its pings fail (bus.PING_INTERVAL_S x MAX_PINGS); a composed estimate is never
older than ttl_s by its writer's measurement time.

Data flows one way: measurements (own probes, the bus) -> estimates -> the
engine's decisions; the agent never writes maps itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from typing import Callable, Optional

from argoctl import __version__
from argoctl.estimator import Estimator, Snapshot, State
from argoctl.pathscore import DOWN, HELD, UNKNOWN, PathScore
from argoctl.fleet import rates
from argoctl.fleet.bus import MAX_PINGS, PING_INTERVAL_S, Bus
from argoctl.fleet.schema import (Leg, Member, direct_value, member_value, probe_id,
                                  shard_count, shard_of, tunnel_value)
from argoctl.fleet.view import FleetView

log = logging.getLogger("argoctl.fleet")

DIRECT = "direct"
PEER_DEST = "@peer"           # the probe scheduler's destination name for tunnel legs
# Falling back to local probing: once the client has no server (at once on a
# closed connection, after its pings on a silent one) for DISCONNECTED_GRACE_S,
# which covers a move to another server of a cluster; while connected but
# re-watching (a cluster electing a stream leader) for as long as the data it
# holds is valid, ttl_s: composition drops anything older anyway.
DISCONNECTED_GRACE_S = 2.0
LOCAL_AFTER_S = PING_INTERVAL_S * MAX_PINGS + DISCONNECTED_GRACE_S
# a shard is rewritten when a leg moved this much, else every ttl/3
RTT_CHANGE_REL, RTT_CHANGE_ABS_MS, LOSS_CHANGE = 0.10, 1.0, 0.05


def tls_context(fc) -> Optional[ssl.SSLContext]:
    if not (fc.tls_ca_file or fc.tls_cert_file):
        return None
    ctx = ssl.create_default_context(cafile=fc.tls_ca_file)
    if fc.tls_cert_file:
        ctx.load_cert_chain(fc.tls_cert_file, fc.tls_key_file)
    return ctx


class FleetAgent:
    def __init__(self, cfg, engine, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, bus: Optional[Bus] = None):
        self.cfg = cfg
        self.fc = cfg.fleet
        self.engine = engine
        self.clock, self.wall = clock, wall
        self.host = cfg.node.name
        self.dests = {d.name: d for d in cfg.destinations}
        self.view = FleetView(self.host, self.fc.ttl_s,
                              {d.name: probe_id(d.probe) for d in cfg.destinations})
        self.peers = {p.name: p for p in cfg.peers}
        self.peer_est = {p: Estimator(cfg.policy, clock()) for p in self.peers}
        self.bus = bus or self._make_bus()
        self.mode = "local"
        self.mode_since = clock()
        self.mode_reason = "starting"
        self.mode_changes = 0
        self._unhealthy_since: Optional[float] = clock()
        self.sched = None
        # (dest, path)s probed end to end: all of them until the plan says otherwise
        self.probed: set[tuple[str, str]] = {(d.name, p) for d in cfg.destinations if d.probe
                                             for p in d.paths}
        self.composed_used = 0                         # decisions' paths scored from the bus
        self.unverified = 0          # stale measured paths not trusted for a failover
        # an answer older than this would make a full-rate stream suspect
        self.stale_s = cfg.policy.timing.suspect_after_s
        self._published: dict[str, tuple[float, dict]] = {}   # key -> (wall at, legs digest)
        self._member_seq = 0
        self._started_wall = wall()
        self._next_publish = 0.0
        self._task: Optional[asyncio.Task] = None
        self._writes_window: list[float] = []
        self._syn_delta: dict[str, tuple[int, int]] = {}
        self._packets_prev: dict[str, int] = {}
        self.publish_skipped = 0
        self.restarts = 0
        # per-stream rates (rates.py): (dest, path) -> pace, peer -> pace; absent = 1
        self.evidence = rates.Evidence(cfg.policy.timing.interval_s)
        self.check_pace = rates.check_pace(cfg.policy.timing.interval_s, self.fc.ttl_s)
        self.look_s = cfg.policy.timing.interval_s / rates.LOOKS   # handshakes_unanswered
        self.paces: dict[tuple[str, str], int] = {}
        self.peer_paces: dict[str, int] = {}
        self.polls = 0

    def _make_bus(self) -> Bus:
        user = password = None
        if self.fc.credentials_file:
            from argoctl.fleet.credentials import read_credentials
            c = read_credentials(self.fc.credentials_file)
            user, password = c.user, c.password
        return Bus(list(self.fc.servers), user, password, members=self.fc.members_bucket,
                   legs=self.fc.legs_bucket, on_member=self._on_member,
                   on_legs=self._on_legs, tls=tls_context(self.fc),
                   name=f"argoctl-{self.host}",
                   stall_s=max(3.0, 3 * self.fc.publish_interval_ms / 1000.0),
                   legs_of=tuple(sorted(self.peers)) if self.fc.watch == "peers" else None)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start()
        self._task = asyncio.create_task(self._publisher(), name="argoctl-fleet-publish")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:
                pass
        await self.bus.stop()

    def _on_member(self, key: str, raw: Optional[bytes]) -> None:
        self.view.ingest_member(key, raw, self.wall())

    def _on_legs(self, key: str, raw: Optional[bytes]) -> None:
        self.view.ingest_legs(key, raw, self.wall())

    # -- mode ------------------------------------------------------------------------

    def update_mode(self, now: float) -> Optional[dict]:
        """Fleet while the bus is healthy (within the graces above), else local.
        Returns a log event when the mode changes."""
        b = self.bus
        if b.healthy:
            self._unhealthy_since = None
            want = "fleet"
        else:
            if self._unhealthy_since is None:
                self._unhealthy_since = now
            grace = self.fc.ttl_s if b.connected else DISCONNECTED_GRACE_S
            want = self.mode if now - self._unhealthy_since < grace else "local"
            if self.mode == "local":
                want = "local"
        if want == self.mode:
            return None
        self.mode, self.mode_since = want, now
        self.mode_changes += 1
        self.mode_reason = ("bus connected: relay paths composed from the fleet" if want == "fleet"
                            else f"bus {b.state}: every path probed locally"
                            + (f" ({b.last_error})" if b.last_error else ""))
        return {"event": "fleet_mode", "mode": want, "reason": self.mode_reason,
                "server": b.server}

    @property
    def active(self) -> bool:
        return self.mode == "fleet"

    # -- the engine's overlay -------------------------------------------------------

    def overlay(self, dest: str, path: str, score: PathScore, now: float) -> Optional[PathScore]:
        """A relay path not measured end to end here (not probed, or probed but not
        answered yet) is scored from the bus: tier `unknown` when the composition
        says up (better than down, worse than anything measured: a path is never
        preferred to a working one before it is verified end to end, yet takes
        traffic at once when nothing else works), `down` when the relay cannot
        reach the destination."""
        if self.mode != "fleet":
            return None
        relay = path != DIRECT and path in self.peers
        probed = (dest, path) in self.probed
        if not relay or (probed and score.state is not State.UNKNOWN):
            return self._unverified(dest, path, score, now, relay)
        c = self.view.compose(path, dest, self.wall())
        snap = score.snapshot
        if c is None:
            if probed:
                return None
            # not probed and nothing on the bus: unknown (not the estimator, which
            # went down by silence alone); the plan probes it next round
            blank = Snapshot(State.UNKNOWN, snap.since, None, None, 0.0, None, 0.0, None, None,
                             0, 0, snap.counts)
            return PathScore(path, State.UNKNOWN, UNKNOWN, None, None, 0.0, False, None, blank)
        self.composed_used += 1
        rtt = c.rtt_ms
        loss = min(c.loss, 0.99)
        ms = None if rtt is None else (rtt + c.jitter_ms + 200.0 * loss) / (1.0 - loss)
        csnap = Snapshot(State.UNKNOWN, snap.since, rtt, None, c.jitter_ms, rtt, loss,
                         None, None, 0, 0, snap.counts)
        tier = DOWN if c.state == "down" else UNKNOWN
        return PathScore(path, State.UNKNOWN, tier, ms, ms, 0.0, False, None, csnap)

    def _unverified(self, dest: str, path: str, score: PathScore, now: float,
                    relay: bool) -> Optional[PathScore]:
        """A failover target must be verified (the rule for failover in fleet
        mode). While the choice is not up, a path measured up whose last end-to-end
        answer is older than a full-rate stream's suspect time (it was checked
        slowly, rates.py) is not trusted with the traffic on that old answer: it
        ranks as unverified (tier unknown, like a composed path), and down when its
        relay has published since that answer that it no longer reaches dest. It
        takes traffic when it answers again: every path of a destination whose
        choice is not up is probed at the full rate and polled at once. Without
        this, an edge whose choice failed moved onto a relay it had last heard
        from seconds ago, cut off by the same fault, and needed a second detection
        to move on. A working choice is not touched: latency moves are unchanged."""
        if score.tier > HELD or score.state is not State.UP:
            return None
        last = score.snapshot.last_reply
        age = None if last is None else now - last
        if age is None or age <= self.stale_s:
            return None
        dec = self.engine.last(dest)
        if dec is None or dec.choice == path or \
                self.engine.path(dest, dec.choice).state is State.UP:
            return None
        tier = UNKNOWN
        if relay:
            wall = self.wall()
            leg = self.view.leg(path, dest, wall)
            if leg is not None and leg.state == "down" and wall - leg.at < age:
                tier = DOWN
        self.unverified += 1
        return PathScore(path, score.state, tier, score.raw_ms, score.smoothed_ms,
                         score.penalty, score.suppressed, score.held_until, score.snapshot)

    # -- what to probe -----------------------------------------------------------------

    def plan(self, decisions: dict, now: float) -> set[tuple[str, str]]:
        """(dest, path)s to probe end to end: in local mode all of them; in fleet
        mode per destination its current choice, its direct path (this host's own
        leg, which the others compose with) and the best `alternatives` others by
        estimate (measured or composed); a path the engine chooses is in it from
        that decision on, so it is verified before any other path is left for it."""
        every = {(d.name, p) for d in self.cfg.destinations if d.probe for p in d.paths}
        if self.mode != "fleet":
            return every
        k = self.fc.alternatives
        out = set()
        for name, d in self.dests.items():
            if d.probe is None:
                continue
            dec = decisions.get(name)
            if dec is None:
                out.update((name, p) for p in d.paths)
                continue
            if rates.in_doubt(dec) or self.evidence.failing(dec.choice):
                # the choice is not verified: every path is verified end to end
                # at the full rate (rates.py), as without fleet mode
                out.update((name, p) for p in d.paths)
                continue
            keep = {dec.choice}
            if DIRECT in d.paths:
                keep.add(DIRECT)
            rest = sorted((s for p, s in dec.scores.items() if p not in keep),
                          key=lambda s: (s.tier, s.smoothed_ms if s.smoothed_ms is not None
                                         else float("inf")))
            room = k - (1 if DIRECT in keep and DIRECT != dec.choice else 0)
            for s in rest[:max(0, room)]:
                keep.add(s.path)
            # a path without any estimate (nothing composed, never measured) is
            # probed: otherwise nothing would ever tell us about it
            for p, s in dec.scores.items():
                if s.tier == UNKNOWN and s.smoothed_ms is None:
                    keep.add(p)
            out.update((name, p) for p in keep)
        return out

    def attach(self, sched) -> None:
        """Use the daemon's probe scheduler: tunnel legs (ICMP to each peer's
        tunnel address through the peer's mark), and the plan's streams."""
        from argoctl.config import Probe
        self.sched = sched
        for name, peer in self.peers.items():
            sched.add(f"{PEER_DEST}/{name}", name, self.cfg.routing.mark(peer.id),
                      Probe(kind="icmp", target=peer.tunnel_address))

    def round(self, decisions: dict, now: float) -> list[dict]:
        """Once per daemon round, after the decisions: mode, overheads, and the
        probe plan applied to the scheduler. Returns log events."""
        events = []
        ev = self.update_mode(now)
        if ev is not None:
            events.append(ev)
        self.learn(decisions, now)
        self.apply_plan(self.plan(decisions, now), now)
        self.apply_paces(decisions, now)
        return events

    def apply_paces(self, decisions: dict, now: float) -> None:
        """Every probed stream's and tunnel leg's pace (rates.py) to the engine's
        estimators (detection times) and the prober (a stream sped up is polled
        at once). Local mode: every stream at the full rate."""
        want: dict[tuple[str, str], int] = {}
        peers: dict[str, int] = {}
        if self.mode == "fleet":
            wall = self.wall()
            by_dest: dict[str, set[str]] = {}
            for dest, path in self.probed:
                by_dest.setdefault(dest, set()).add(path)
            relays = set(self.peers)
            for dest, paths in by_dest.items():
                dec = decisions.get(dest)
                if dec is None:
                    continue
                got = rates.paces(dec, paths, self.cfg.policy, self.check_pace, self.evidence,
                                  now, lambda p, dest=dest: self.view.compose(p, dest, wall),
                                  relays)
                for p, n in got.items():
                    if n != 1:
                        want[(dest, p)] = n
            for peer, est in self.peer_est.items():
                n = rates.peer_pace(est.state, self.check_pace)
                if n != 1:
                    peers[peer] = n
        # a shared stream runs at the fastest pace any of its destinations wants
        groups: dict = {}
        for d in self.cfg.destinations:
            for p in d.paths:
                if (d.name, p) in self.probed:
                    groups.setdefault(self.cfg.measurement(d, p), []).append((d.name, p))
        for pair in [p for p in self.paces if p not in self.probed]:
            del self.paces[pair]                 # no longer probed (restarted when it is)
        for pairs in groups.values():
            n = min(want.get(pair, 1) for pair in pairs)
            if n != self.paces.get(pairs[0], 1):
                if n < self.paces.get(pairs[0], 1):
                    self.polls += 1
                self.engine.pace(*pairs[0], n, now)
                if self.sched is not None:
                    self.sched.pace(*pairs[0], n)
            for pair in pairs:
                if n == 1:
                    self.paces.pop(pair, None)
                else:
                    self.paces[pair] = n
        for peer, est in self.peer_est.items():
            n = peers.get(peer, 1)
            if n != self.peer_paces.get(peer, 1):
                est.pace(n, self.cfg.policy.timing_at(n), now)
                if self.sched is not None:
                    self.sched.pace(f"{PEER_DEST}/{peer}", peer, n)
            if n == 1:
                self.peer_paces.pop(peer, None)
            else:
                self.peer_paces[peer] = n

    def pace_of(self, dest: str, path: str) -> int:
        """How many probe intervals apart (dest, path) is probed (1: full rate)."""
        return self.paces.get((dest, path), 1)

    def apply_plan(self, wanted: set[tuple[str, str]], now: float) -> None:
        """Start and stop probe streams so that exactly the measurement groups of
        `wanted` are probed (destinations sharing a probe share the stream: it
        runs while any of them wants it). A restarted stream gets a fresh
        estimator (Engine.restart): silence while unprobed is not a failure."""
        sched = self.sched
        groups: dict = {}
        for d in self.cfg.destinations:
            if d.probe is None:
                continue
            for p in d.paths:
                groups.setdefault(self.cfg.measurement(d, p), []).append((d.name, p))
        probed = set()
        for key, pairs in groups.items():
            want = any(pair in wanted for pair in pairs)
            have = pairs[0] in self.probed
            if want and not have:
                self.engine.restart(*pairs[0], now)
                self.restarts += 1
                for pair in pairs:              # a new stream starts at the full rate
                    self.paces.pop(pair, None)
                if sched is not None:
                    for dest, path in pairs:
                        mark = self.cfg.routing.mark(self.cfg.path_id(path))
                        sched.add(dest, path, mark, self.dests[dest].probe, group=key)
            elif have and not want and sched is not None:
                for pair in pairs:
                    sched.remove(*pair)
            if want:
                probed.update(pairs)
        self.probed = probed

    # -- own measurements -> the bus ----------------------------------------------------

    def on_peer_result(self, peer: str, seq: int, sent_ns: int, rtt: Optional[float],
                       now_ns: int) -> None:
        est = self.peer_est.get(peer)
        if est is None:
            return
        if rtt is None:
            est.on_timeout(seq, now_ns / 1e9)
        else:
            est.on_reply(seq, sent_ns / 1e9, rtt, now_ns / 1e9)

    def on_passive(self, path: str, syn: int, synack: int, now: Optional[float] = None) -> None:
        """The datapath's passive counters of one path (deltas since the last poll):
        the demand-mode evidence of rates.py, and the SYN counts published with
        the direct leg."""
        self.evidence.on_passive(path, syn, synack, self.clock() if now is None else now)
        if path == DIRECT:
            s, a = self._syn_delta.get(DIRECT, (0, 0))
            self._syn_delta[DIRECT] = (s + syn, a + synack)

    def handshakes_unanswered(self, read: Callable[[str], tuple[int, int]]) -> bool:
        """rates.Evidence.look on the paths of the choices on demand (none in local
        mode). `read(path)`: its datapath's cumulative (SYNs, SYN-ACKs)."""
        paths = {p for (_, p), n in self.paces.items() if n == rates.DEMAND_PACE}
        return self.evidence.look(paths, read)

    def on_traffic(self, packets: dict[str, int], now: float) -> None:
        """The datapath's packet counters per destination (cumulative): which
        destinations carry traffic here (rates.py, idle). A first read is
        history: counted from the next."""
        for dest, n in packets.items():
            prev = self._packets_prev.get(dest)
            self._packets_prev[dest] = n
            if prev is not None:
                self.evidence.on_traffic(dest, max(0, n - prev), now)

    def _leg_of(self, snap: Snapshot, now: float, wall: float, probe: Optional[str],
                syn=(0, 0)) -> Leg:
        # An RTT is as old as the reply it came from; a down verdict is measured
        # now (the silence is current). Dated by its last reply, a leg that went
        # down more than a TTL after it arrived as already expired: the fleet
        # never heard that this host lost the destination.
        if snap.last_reply is None or snap.state is State.DOWN:
            at = wall
        else:
            at = wall - min(max(0.0, now - snap.last_reply), self.fc.ttl_s)
        return Leg(snap.state.value, snap.srtt_ms, snap.jitter_ms, snap.loss, at, probe, syn)

    def own_legs(self, now: float, wall: float) -> tuple[dict[str, Leg], dict[str, Leg]]:
        """(direct legs by destination, tunnel legs by peer) as measured here."""
        direct = {}
        syn = self._syn_delta.pop(DIRECT, (0, 0))
        for name, d in self.dests.items():
            if DIRECT not in d.paths or d.probe is None:
                continue
            est = self.engine.path(name, DIRECT)
            est.tick(now)
            direct[name] = self._leg_of(est.snapshot(), now, wall, probe_id(d.probe), syn)
        tunnel = {}
        for peer, est in self.peer_est.items():
            est.tick(now)
            snap = est.snapshot()
            if snap.state is State.UNKNOWN and snap.last_reply is None:
                continue
            leg = self._leg_of(snap, now, wall, None)
            tunnel[peer] = leg
            self.view.my_tunnel[peer] = leg
        return direct, tunnel

    def member(self, wall: float) -> Member:
        n = self.cfg.node
        self._member_seq += 1
        wg = None
        if n.private_key_file and any(p.tunnel == "wireguard" for p in self.cfg.peers):
            try:
                from argoctl import keys
                wg = keys.encode(keys.public_key(keys.read_private_key(n.private_key_file)))
            except Exception:
                wg = None
        return Member(self.host, wall, self._member_seq, __version__,
                      "relay" if n.relay else "edge", self._started_wall, (str(n.address),),
                      str(n.tunnel_address), wg, tuple(self.peers), len(self.dests),
                      self.cfg.policy.probe_interval_ms)

    def _changed(self, old: dict, legs: dict[str, Leg]) -> bool:
        if set(old) != set(legs):
            return True
        for k, l in legs.items():
            o = old[k]
            if o.state != l.state or abs(o.loss - l.loss) > LOSS_CHANGE:
                return True
            if (o.rtt_ms is None) != (l.rtt_ms is None):
                return True
            if l.rtt_ms is not None:
                d = abs(o.rtt_ms - l.rtt_ms)
                if d > RTT_CHANGE_ABS_MS and d > RTT_CHANGE_REL * o.rtt_ms:
                    return True
        return False

    def batch(self, now: float, wall: float) -> dict[str, bytes]:
        """The legs values due now: shards that changed materially or were last
        written ttl/3 ago, within max_writes_per_s (oldest first; the rest wait)."""
        direct, tunnel = self.own_legs(now, wall)
        shards = shard_count(len(direct), self.fc.legs_per_message)
        by_shard: dict[int, dict[str, Leg]] = {}
        for name, leg in direct.items():
            by_shard.setdefault(shard_of(name, shards), {})[name] = leg
        due = []
        refresh = self.fc.ttl_s / 3
        candidates = {f"{self.host}.d.{i}": (legs, i) for i, legs in by_shard.items()}
        candidates[f"{self.host}.t"] = (tunnel, None)
        for key, (legs, i) in candidates.items():
            last = self._published.get(key)
            if last is None or wall - last[0] >= refresh or self._changed(last[1], legs):
                due.append((last[0] if last else 0.0, key, legs, i))
        due.sort()
        self._writes_window = [t for t in self._writes_window if now - t < 1.0]
        budget = max(1, int(self.fc.max_writes_per_s)) - len(self._writes_window)
        out = {}
        for _, key, legs, i in due[:max(0, budget)]:
            out[key] = (tunnel_value(self.host, legs, wall) if i is None
                        else direct_value(self.host, i, shards, legs, wall))
            self._published[key] = (wall, legs)
            self._writes_window.append(now)
        self.publish_skipped += max(0, len(due) - len(out))
        return out

    async def publish_once(self) -> None:
        now, wall = self.clock(), self.wall()
        if not self.bus.healthy:
            return
        await self.bus.put_member(self.host, member_value(self.member(wall)))
        items = self.batch(now, wall)
        if items:
            ok = await self.bus.put_legs(items)
            if ok < len(items):      # write them again next time
                for k in items:
                    self._published.pop(k, None)

    async def _publisher(self) -> None:
        interval = self.fc.publish_interval_ms / 1000.0
        while True:
            try:
                await self.publish_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning(json.dumps({"event": "fleet_publish_failed", "error": str(e)[:200]}))
            await asyncio.sleep(interval)

    def learn(self, decisions: dict, now: float) -> None:
        """End-to-end RTTs of relay paths measured here teach the relay overheads."""
        if self.mode != "fleet":
            return
        wall = self.wall()
        for (dest, path) in self.probed:
            if path == DIRECT or path not in self.peers:
                continue
            dec = decisions.get(dest)
            s = dec.scores.get(path) if dec is not None else None
            if s is None or s.state is not State.UP or s.snapshot.srtt_ms is None:
                continue
            self.view.learn(path, dest, s.snapshot.srtt_ms, wall)

    # -- status ---------------------------------------------------------------------------

    def status_doc(self, now: float) -> dict:
        wall = self.wall()
        members = {}
        for h, m in sorted(self.view.members.items()):
            age = wall - m.at
            members[h] = {"role": m.role, "version": m.version, "age_s": round(age, 1),
                          "healthy": age <= self.fc.ttl_s, "underlay": list(m.underlay),
                          "tunnel_address": m.tunnel_address, "peers": list(m.peers),
                          "destinations": m.destinations}
        reach, mine = {}, {}
        for dest in sorted(self.dests):
            rows = {}
            for h, leg in sorted(self.view.reachers(dest, wall).items()):
                rows[h] = {"how": "direct", "state": leg.state, "rtt_ms": leg.rtt_ms,
                           "loss": round(leg.loss, 4), "age_s": round(wall - leg.at, 1)}
            reach[dest] = rows
            mine[dest] = self._my_paths(dest, now, wall)
        b = self.bus
        return {"mode": self.mode, "reason": self.mode_reason,
                "since_s": round(now - self.mode_since, 1), "mode_changes": self.mode_changes,
                "bus": {"state": b.state, "server": b.server, "last_error": b.last_error,
                        "updates": b.updates, "writes": b.writes,
                        "write_errors": b.write_errors, "disconnects": b.disconnects},
                "ingest": {"accepted": self.view.accepted,
                           "rejected": dict(self.view.rejected)},
                "probed": len(self.probed),
                "paced": len(self.paces), "polls": self.polls,
                "tunnel_paces": {p: self.peer_paces.get(p, 1) for p in sorted(self.peers)},
                "overhead_ms": {r: round(v, 3) for r, v in sorted(self.view.overhead.items())},
                "members": members, "reach": reach, "paths": mine}

    def _my_paths(self, dest: str, now: float, wall: float) -> dict:
        """How this host reaches dest on each path: measured end to end, or composed
        from the bus (relay's leg + tunnel leg + overhead)."""
        out = {}
        dec = self.engine.last(dest)
        for p in self.dests[dest].paths:
            s = dec.scores.get(p) if dec is not None else None
            row = {"probed": (dest, p) in self.probed,
                   "pace": self.pace_of(dest, p) if (dest, p) in self.probed else None,
                   "state": None if s is None else s.state.value,
                   "tier": None if s is None else s.tier_name,
                   "score_ms": None if s is None or s.smoothed_ms is None
                   else round(s.smoothed_ms, 3),
                   "chosen": dec is not None and dec.choice == p}
            if (self.mode == "fleet" and p in self.peers and s is not None
                    and s.state is State.UNKNOWN):      # what overlay() scored
                c = self.view.compose(p, dest, wall)
                if c is not None:
                    row.update(how="composed", relay_state=c.state, leg_rtt_ms=c.leg_rtt_ms,
                               hop_rtt_ms=c.hop_rtt_ms, overhead_ms=round(c.overhead_ms, 3))
                else:
                    row["how"] = "unknown"
            else:
                row["how"] = "end-to-end"
            out[p] = row
        return out
