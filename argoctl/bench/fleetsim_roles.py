"""The parts of `argoctl bench fleetsim` (argoctl/bench/fleetsim.py) that run in
their own processes, and the synthetic fleet they share: publishers (H hosts,
values built by argoctl.fleet.schema, put like the agent's Bus puts them),
watchers that only count (fan-out load), and one agent (the real Bus and
FleetView) whose CPU is measured. Each talks to the bench over a pipe."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from dataclasses import dataclass
from typing import Optional

from argoctl.config import Fleet
from argoctl.fleet.schema import (LEGS_PER_MESSAGE, Leg, Member, Rejected, direct_value,
                                  member_value, parse_legs_key, shard_count, shard_of,
                                  tunnel_value)

# the agent's defaults ([fleet]; docs/fleet.md "Rates" and "Buckets")
WRITES_PER_S = Fleet.max_writes_per_s
INTERVAL_S = Fleet.publish_interval_ms / 1000.0
TTL_S = Fleet.ttl_s
PEERS = 8                 # tunnel legs per synthetic host
AGENT = "agent"
NICE = 10                 # load generators yield to everyone else on this shared machine
HOSTS_PER_PUBLISHER = 4   # publisher processes: ceil(hosts / this)


def dest_name(i: int) -> str:
    return f"d{i:06d}"


def probe_of(i: int) -> str:
    """Destination i's probe (documentation addresses; the reader checks it)."""
    return f"udp:203.0.113.{1 + i % 254}:{7000 + i // 254}"


def host_name(i: int) -> str:
    return f"h{i:03d}"


def shard_names(dests: int) -> list[list[int]]:
    """Destination indices per shard, as every agent shards them (schema.shard_of)."""
    shards = shard_count(dests, LEGS_PER_MESSAGE)
    out: list[list[int]] = [[] for _ in range(shards)]
    for i in range(dests):
        out[shard_of(dest_name(i), shards)].append(i)
    return out


class SynthLegs:
    """Plausible legs of one host, cheap to make (the simulation's own cost is not
    what it measures): a stable base RTT per destination of 5-200 ms, moved by
    +-3 % from one write to the next, about 1 % of destinations down."""

    def __init__(self, seed: int, n: int):
        self.base = [5.0 + ((seed * 7919 + i * 104729) % 19500) / 100.0 for i in range(n)]
        self.down = {i for i in range(n) if (seed * 31 + i) % 97 == 0}

    def leg(self, i: int, k: int, wall: float, probe: Optional[str]) -> Leg:
        if i in self.down:
            return Leg("down", None, 0.0, 1.0, wall - 1.0, probe, (3, 0) if probe else (0, 0))
        rtt = self.base[i] * (1.0 + 0.03 * ((i + k) % 3 - 1))
        syn = (1 + (i + k) % 39,) * 2 if probe else (0, 0)
        return Leg("up", rtt, rtt * 0.02, 0.0, wall - 0.2, probe, syn)


def bad_values(hosts: list[str], dests: int, now: float, ttl_s: float) -> dict[str, bytes]:
    """One value per ingest rejection reason, under keys of hosts that publish
    nothing else (so the good keys stay intact): key -> raw value."""
    shards = shard_count(dests, LEGS_PER_MESSAGE)
    d0 = dest_name(0)
    good = Leg("up", 10.0, 0.1, 0.0, now, None)
    return {
        "rogue-a.d.0": b"{not json",                                           # schema
        "rogue-b.t": tunnel_value("rogue-b", {hosts[0]: good}, now - 3 * ttl_s),  # stale
        "rogue-c.t": tunnel_value(hosts[0], {hosts[0]: good}, now),            # impostor
        "rogue-d.t": tunnel_value("rogue-d", {hosts[0]: good,                  # absurd (1 leg)
                                              hosts[-1]: Leg("up", 10.0, 0.1, 7.0, now, None)},
                                  now),
        f"rogue-e.d.{shard_of(d0, shards)}": direct_value(                     # mismatch
            "rogue-e", shard_of(d0, shards), shards,
            {d0: Leg("up", 10.0, 0.1, 0.0, now, "udp:192.0.2.1:9", (1, 1))}, now),
    }


def values_per_round(shards: int, writes_per_s: int) -> int:
    """Legs values a host writes per publish interval when all are due: its shards
    and its tunnel-leg value, at most max_writes_per_s (plus its membership)."""
    return min(shards + 1, writes_per_s)


BAD_REASONS = {"schema": 1, "stale": 1, "impostor": 1, "absurd": 1, "mismatch": 1}

# -- publishers (their own processes) ------------------------------------------------

@dataclass
class PubSpec:
    hosts: list[str]
    index: list[int]         # each host's index in the fleet (its stagger and seed)
    fleet_size: int
    passwords: dict
    urls: list[str]
    members: str
    legs: str
    dests: int
    writes_per_s: int = WRITES_PER_S
    interval_s: float = INTERVAL_S
    track: bool = False      # remember the last value of every leg (tests)
    nice: int = NICE


def publisher_main(conn, spec: PubSpec) -> None:
    os.nice(spec.nice)
    try:
        asyncio.run(_publish(conn, spec))
    except BaseException as e:      # the parent reports it; never a silent hang
        conn.send(("error", f"{type(e).__name__}: {e}"))


async def _recv(conn):
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


async def _publish(conn, spec: PubSpec) -> None:
    import nats

    from argoctl import __version__

    by_shard = shard_names(spec.dests)
    shards = len(by_shard)
    names = [dest_name(i) for i in range(spec.dests)]
    probes = [probe_of(i) for i in range(spec.dests)]
    conns = []
    events = {"disconnects": 0, "client_errors": 0}

    async def disconnected():
        events["disconnects"] += 1

    async def error(e):          # failed puts are counted where they fail
        events["client_errors"] += 1

    for h in spec.hosts:
        nc = await nats.connect(spec.urls, user=h, password=spec.passwords[h],
                                name=f"fleetsim-{h}", connect_timeout=10,
                                max_reconnect_attempts=3, disconnected_cb=disconnected,
                                error_cb=error)
        js = nc.jetstream(timeout=30)
        conns.append((nc, await js.key_value(spec.members), await js.key_value(spec.legs)))
    conn.send(("ready",))
    cmd, t0, seconds, give_up = await _recv(conn)     # rounds not begun by give_up: skipped
    end = t0 + seconds
    st = {"puts": 0, "legs_puts": 0, "member_puts": 0, "direct_legs": 0, "tunnel_legs": 0,
          "bytes": 0, "errors": 0, "last_error": None, "rounds": 0, "late_rounds": 0,
          "skipped_rounds": 0,
          "encode_cpu_s": 0.0, "disconnects": 0, "direct_bytes": 0,
          "member_bytes": 0, "tunnel_puts": 0, "last_put": t0}
    last: dict = {}
    started = time.time()

    async def host(k: int, h: str, kvm, kvl) -> None:
        n = spec.index[k]
        synth = SynthLegs(n, spec.dests)
        tun = SynthLegs(n, PEERS)
        peers = [host_name((n + j + 1) % spec.fleet_size)
                 for j in range(min(PEERS, spec.fleet_size - 1))]
        ptr, seq = shards, 0          # the tunnel-leg value first, then the shards in turn
        tick = t0 + spec.interval_s * n / spec.fleet_size        # hosts spread over the interval
        while tick < end:
            if time.time() > give_up:
                st["skipped_rounds"] += int((end - tick) / spec.interval_s + 0.999)
                break
            delay = tick - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > spec.interval_s:
                st["late_rounds"] += 1
            wall = time.time()
            c0 = time.process_time()
            seq += 1
            mv = member_value(Member(h, wall, seq, __version__, "relay" if n % 2 else "edge",
                                     started, (f"192.0.2.{1 + n % 250}",),
                                     f"198.51.100.{1 + n % 250}", None, tuple(peers),
                                     spec.dests, int(spec.interval_s * 1000)))
            items = {}
            # every value is due each round (worst-case churn): the oldest first,
            # tunnel legs and shards alike, max_writes_per_s of them (the agent's batch)
            for _ in range(values_per_round(shards, spec.writes_per_s)):
                s = ptr % (shards + 1)
                ptr += 1
                if s == shards:
                    items[f"{h}.t"] = tunnel_value(h, {p: tun.leg(j, seq, wall, None)
                                                       for j, p in enumerate(peers)}, wall)
                    st["tunnel_legs"] += len(peers)
                    continue
                legs = {names[i]: synth.leg(i, seq, wall, probes[i]) for i in by_shard[s]}
                items[f"{h}.d.{s}"] = direct_value(h, s, shards, legs, wall)
                await asyncio.sleep(0)    # the client answers pings between shards
                st["direct_legs"] += len(legs)
                if spec.track:
                    for d, leg in legs.items():
                        last[(h, d)] = None if leg.rtt_ms is None else round(leg.rtt_ms, 3)
            st["encode_cpu_s"] += time.process_time() - c0
            res = await asyncio.gather(kvm.put(h, mv), *(kvl.put(k, v) for k, v in items.items()),
                                       return_exceptions=True)
            for i, r in enumerate(res):
                if isinstance(r, BaseException):
                    st["errors"] += 1
                    st["last_error"] = f"{type(r).__name__}: {r}"[:200]
                else:
                    st["puts"] += 1
                    st["member_puts" if i == 0 else "legs_puts"] += 1
            st["bytes"] += len(mv) + sum(len(v) for v in items.values())
            st["member_bytes"] += len(mv)
            st["direct_bytes"] += sum(len(v) for k, v in items.items() if not k.endswith(".t"))
            st["tunnel_puts"] += f"{h}.t" in items
            st["last_put"] = time.time()
            st["rounds"] += 1
            tick += spec.interval_s

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(host(k, h, kvm, kvl) for k, (h, (_, kvm, kvl))
                           in enumerate(zip(spec.hosts, conns))))
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    st.update(events)
    st["cpu_s"] = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    for nc, _, _ in conns:
        await nc.close()
    if spec.track:
        st["last"] = {f"{h} {d}": v for (h, d), v in last.items()}
    conn.send(("done", st))


# -- watchers without decoding (fan-out load) ------------------------------------------

def watcher_main(conn, users: list[str], passwords: dict, urls: list[str], bucket: str) -> None:
    os.nice(NICE)
    asyncio.run(_watch(conn, users, passwords, urls, bucket))


async def _watch(conn, users, passwords, urls, bucket) -> None:
    import nats

    got = {"values": 0, "bytes": 0}
    ncs, tasks = [], []

    async def pump(w):
        async for e in w:
            if e is not None:
                got["values"] += 1
                got["bytes"] += len(e.value or b"")
    for u in users:
        nc = await nats.connect(urls, user=u, password=passwords[u], connect_timeout=10)
        ncs.append(nc)
        kv = await nc.jetstream(timeout=30).key_value(bucket)
        tasks.append(asyncio.create_task(pump(await kv.watchall())))
    conn.send(("ready",))
    _, (want, _, timeout) = await _recv(conn)
    t0 = time.monotonic()
    while got["values"] < want * len(users) and time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    for nc in ncs:
        await nc.close()
    conn.send(("done", got))


# -- the agent (its own process: its CPU is what we measure) ----------------------------

def agent_main(conn, urls: list[str], password: str, members: str, legs: str, dests: int,
               ttl_s: float, track: bool) -> None:
    try:
        asyncio.run(_agent(conn, urls, password, members, legs, dests, ttl_s, track))
    except BaseException as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))


async def _agent(conn, urls, password, members, legs, dests, ttl_s, track) -> None:
    from argoctl.fleet.bus import Bus
    from argoctl.fleet.view import FleetView

    names = [dest_name(i) for i in range(dests)]
    view = FleetView(AGENT, ttl_s, {names[i]: probe_of(i) for i in range(dests)})
    by_shard = [[names[i] for i in s] for s in shard_names(dests)]
    st = {"legs_values": 0, "member_values": 0, "composed": 0, "ingest_cpu_s": 0.0,
          "compose_cpu_s": 0.0, "bytes": 0}

    def on_legs(key: str, raw: Optional[bytes]) -> None:
        c0 = time.process_time()
        now = time.time()
        st["legs_values"] += 1
        st["bytes"] += len(raw or b"")
        view.ingest_legs(key, raw, now)
        c1 = time.process_time()
        st["ingest_cpu_s"] += c1 - c0
        if raw is None:
            return
        # the engine re-scores every relay path whose leg changed: compose each
        try:
            host, kind, shard = parse_legs_key(key)
        except Rejected:
            return
        if kind == "d" and shard is not None and shard < len(by_shard):
            for d in by_shard[shard]:
                if view.compose(host, d, now) is not None:
                    st["composed"] += 1
        st["compose_cpu_s"] += time.process_time() - c1

    def on_member(key: str, raw: Optional[bytes]) -> None:
        st["member_values"] += 1
        view.ingest_member(key, raw, time.time())

    bus = Bus(urls, AGENT, password, members=members, legs=legs, on_member=on_member,
              on_legs=on_legs, name="fleetsim-agent")
    await bus.start()
    try:
        t_end = time.monotonic() + 30
        while not bus.healthy:
            if time.monotonic() > t_end:
                raise RuntimeError(f"agent bus not healthy: {bus.state} {bus.last_error}")
            await asyncio.sleep(0.05)
        conn.send(("ready",))
        while True:
            cmd, arg = await _recv(conn)
            if cmd == "mark":
                ru = resource.getrusage(resource.RUSAGE_SELF)
                conn.send(("mark", {**st, "cpu_s": ru.ru_utime + ru.ru_stime,
                                    "t": time.monotonic()}))
            elif cmd == "finish":
                # drain: wait (bounded) until everything published has arrived
                want_legs, want_members, timeout = arg
                t0 = time.monotonic()
                while (st["legs_values"] < want_legs or st["member_values"] < want_members) \
                        and time.monotonic() - t0 < timeout:
                    await asyncio.sleep(0.05)
                ru = resource.getrusage(resource.RUSAGE_SELF)
                out = {**st, "drain_s": round(time.monotonic() - t0, 3),
                       "cpu_s": ru.ru_utime + ru.ru_stime, "t": time.monotonic(),
                       "accepted": view.accepted, "rejected": dict(view.rejected),
                       "members": len(view.members), "bus_state": bus.state}
                if track:
                    out["last"] = {f"{h} {d}": (None if leg.rtt_ms is None
                                                else round(leg.rtt_ms, 3))
                                   for (h, d), leg in view.direct.items()}
                conn.send(("done", out))
                return
    finally:
        await bus.stop()
