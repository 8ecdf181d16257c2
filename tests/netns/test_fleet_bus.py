"""Fleet mode against a real nats-server on loopback (argoctl.lab.nats): per-host
permissions, bad data in a bucket, the bus's health when servers die, and a
3-server cluster losing one."""

import asyncio
import json
import time

from argoctl.fleet import schema
from argoctl.fleet.bus import Bus
from argoctl.fleet.credentials import read_credentials
from argoctl.fleet.schema import Leg
from argoctl.fleet.view import FleetView
from argoctl.lab.nats import NatsFleet

HOSTS = ["edge", "relay1", "relay2"]
PROBE = "udp:203.0.113.10:7447"


def make_bus(nf: NatsFleet, host: str, view: FleetView, stall_s=None, legs_of=None) -> Bus:
    c = read_credentials(nf.credentials(host))
    return Bus(nf.urls, c.user, c.password, members=nf.members, legs=nf.legs, stall_s=stall_s,
               legs_of=legs_of,
               on_member=lambda k, v: view.ingest_member(k, v, time.time()),
               on_legs=lambda k, v: view.ingest_legs(k, v, time.time()))


async def until(cond, timeout=15.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


def legs_value(host, rtt, at=None):
    return schema.direct_value(host, 0, 1, {"origin": Leg("up", rtt, 0.1, 0.0,
                                                           at or time.time(), PROBE, (0, 0))},
                               at or time.time())


def test_a_host_writes_its_own_legs_and_cannot_forge_anothers(nats_fleet):
    async def main():
        ve, vr = FleetView("edge", 15, {"origin": PROBE}), FleetView("relay1", 15, {"origin": PROBE})
        edge, relay = make_bus(nats_fleet, "edge", ve), make_bus(nats_fleet, "relay1", vr)
        await edge.start()
        await relay.start()
        try:
            assert await until(lambda: edge.healthy and relay.healthy)
            assert await relay.put_legs({"relay1.d.0": legs_value("relay1", 20.0)}) == 1
            assert await until(lambda: ve.leg("relay1", "origin", time.time()) is not None)
            # edge writes under relay1's key: the server refuses it
            assert await edge.put_legs({"relay1.d.0": legs_value("relay1", 1.0)},
                                       timeout=3) == 0
            assert edge.write_errors == 1
            assert await until(lambda: edge.refused == 1)
            assert "permissions violation for publish" in edge.last_refused.lower()
            await asyncio.sleep(0.5)
            assert ve.leg("relay1", "origin", time.time()).rtt_ms == 20.0
            # ... and its own key is fine
            assert await edge.put_legs({"edge.d.0": legs_value("edge", 5.0)}) == 1
            assert await until(lambda: vr.leg("edge", "origin", time.time()) is not None)
            assert sum(ve.rejected.values()) == sum(vr.rejected.values()) == 0
        finally:
            await edge.stop()
            await relay.stop()
    asyncio.run(main())


def test_watching_the_peers_only_receives_their_legs_and_every_member(nats_fleet):
    """[fleet] watch = "peers": the edge composes with relay1 only, so it takes in
    relay1's legs and not relay2's (what makes a large fleet's ingest affordable),
    and still sees every member."""
    async def main():
        ve = FleetView("edge", 15, {"origin": PROBE})
        edge = make_bus(nats_fleet, "edge", ve, legs_of=("relay1",))
        others = {h: make_bus(nats_fleet, h, FleetView(h, 15, {"origin": PROBE}))
                  for h in ("relay1", "relay2")}
        for b in (edge, *others.values()):
            await b.start()
        try:
            assert await until(lambda: edge.healthy and all(b.healthy for b in others.values()))
            for h, b in others.items():
                assert await b.put_legs({f"{h}.d.0": legs_value(h, 20.0)}) == 1
                now = time.time()
                assert await b.put_member(h, schema.member_value(schema.Member(
                    h, now, 1, "test", "relay", now, ("192.0.2.1",), None, None, (), 1,
                    1000))) == 1
            assert await until(lambda: ve.leg("relay1", "origin", time.time()) is not None)
            assert await until(lambda: set(ve.members) >= {"relay1", "relay2"})
            await asyncio.sleep(1.0)        # relay2's legs had every chance to arrive
            assert ve.leg("relay2", "origin", time.time()) is None
            assert sum(ve.rejected.values()) == 0
        finally:
            for b in (edge, *others.values()):
                await b.stop()
    asyncio.run(main())


def test_bad_data_in_the_bucket_is_ignored_and_counted(nats_fleet):
    async def main():
        ve = FleetView("edge", 15, {"origin": PROBE})
        edge = make_bus(nats_fleet, "edge", ve)
        await edge.start()
        nc = await nats_fleet.admin()        # the admin may write anything
        try:
            kv = await nc.jetstream().key_value(nats_fleet.legs)
            assert await until(lambda: edge.healthy)
            await kv.put("relay1.d.0", b"{not json")
            await kv.put("relay2.d.0", legs_value("relay1", 3.0))             # impostor
            await kv.put("relay1.t", schema.tunnel_value(
                "relay1", {"edge": Leg("up", 1.0, 0.0, 0.0, time.time())}, time.time() - 120))
            await kv.put("relay2.t", json.dumps(
                {"v": 1, "host": "relay2", "at": time.time(),
                 "legs": {"edge": {"state": "up", "rtt_ms": -5, "jitter_ms": 0, "loss": 0,
                                   "age_ms": 0}}}).encode())
            await kv.put("relay1.d.1", legs_value("relay1", 7.0))   # shard 1 claims shard 0
            assert await until(lambda: sum(ve.rejected.values()) == 5)
            assert dict(ve.rejected) == {"schema": 2, "absurd": 1, "stale": 1, "impostor": 1,
                                         "mismatch": 0}
            assert ve.direct == {} and ve.tunnel == {}
        finally:
            await nc.close()
            await edge.stop()
    asyncio.run(main())


def test_killing_the_only_server_makes_the_bus_unhealthy_at_once_and_it_recovers(nats_fleet):
    async def main():
        ve = FleetView("edge", 15, {"origin": PROBE})
        edge = make_bus(nats_fleet, "edge", ve)
        await edge.start()
        try:
            assert await until(lambda: edge.healthy)
            t0 = time.monotonic()
            nats_fleet.kill(0)
            assert await until(lambda: not edge.healthy, timeout=10)
            assert time.monotonic() - t0 < 5.0
            nats_fleet.start_server(0)       # same port, same JetStream directory
            assert await until(lambda: edge.healthy, timeout=30)
            assert await edge.put_legs({"edge.d.0": legs_value("edge", 5.0)}) == 1
        finally:
            await edge.stop()
    asyncio.run(main())


def test_unreachable_at_start_is_not_an_error():
    async def main():
        from argoctl.lab.nats import free_port
        ve = FleetView("edge", 15, {})
        bus = Bus([f"nats://127.0.0.1:{free_port()}"], "edge", "secret-password",
                  members="argoctl_members", legs="argoctl_legs",
                  on_member=lambda k, v: None, on_legs=lambda k, v: None)
        await bus.start()
        await asyncio.sleep(1.0)
        assert not bus.healthy and bus.state in ("connecting", "unreachable")
        assert "secret-password" not in (bus.last_error or "")
        assert await bus.put_legs({"edge.t": b"{}"}) == 0
        await bus.stop()
    asyncio.run(main())


def test_a_three_server_cluster_loses_one_without_interruption():
    """Kill the server the writer is connected to: its client moves to another
    at once, writes land again within seconds (the stream elects a new leader),
    and the reader never lacks a fresh leg meanwhile."""
    with NatsFleet(HOSTS, size=3) as nf:
        async def main():
            ve, vr = FleetView("edge", 15, {"origin": PROBE}), FleetView("relay1", 15,
                                                                          {"origin": PROBE})
            # (stall_s: as the agent's, whose own records come back every interval)
            edge = make_bus(nf, "edge", ve, stall_s=3.0)
            relay = make_bus(nf, "relay1", vr, stall_s=3.0)
            await edge.start()
            await relay.start()
            try:
                assert await until(lambda: edge.healthy and relay.healthy, timeout=30)
                assert await relay.put_legs({"relay1.d.0": legs_value("relay1", 10.0)}) == 1
                assert await until(lambda: ve.leg("relay1", "origin", time.time()) is not None)
                victim = nf.urls.index(relay.server)
                nf.kill(victim)
                t0 = time.monotonic()
                first_write, rtt, missing = None, 10.0, 0
                while time.monotonic() - t0 < 12:
                    if await relay.put_legs({"relay1.d.0": legs_value("relay1", rtt + 1)},
                                            timeout=3) == 1:
                        rtt += 1
                        if first_write is None:
                            first_write = time.monotonic() - t0
                    if ve.leg("relay1", "origin", time.time()) is None:
                        missing += 1
                    await asyncio.sleep(0.2)
                assert relay.connected and relay.server != nf.urls[victim]
                # (a new stream leader: 2-8 s measured here; the TTL is 15 s)
                assert first_write is not None and first_write < 10.0, first_write
                assert missing == 0          # edge's estimate never lapsed
                assert await until(lambda: edge.healthy and relay.healthy, timeout=15)
                assert await relay.put_legs({"relay1.d.0": legs_value("relay1", 99.0)}) == 1

                def latest():
                    leg = ve.leg("relay1", "origin", time.time())
                    return leg is not None and leg.rtt_ms == 99.0
                assert await until(latest)
            finally:
                await edge.stop()
                await relay.stop()
        asyncio.run(main())



def test_fleet_init_creates_the_buckets_and_permissions_match(tmp_path):
    from click.testing import CliRunner
    from argoctl.cli import cli
    from argoctl.lab.nats import host_permissions
    with NatsFleet(HOSTS, create_buckets=False) as nf:
        creds = nf.credentials("edge")
        cfg = tmp_path / "edge.toml"
        cfg.write_text('[node]\nname = "edge"\naddress = "192.0.2.1"\n'
                       'tunnel_address = "198.51.100.1"\n\n[fleet]\n'
                       f'servers = ["{nf.urls[0]}"]\ncredentials_file = "{creds}"\n')
        out = CliRunner().invoke(cli, ["fleet", "permissions", "-c", str(cfg)])
        assert out.exit_code == 0, out.output
        doc = json.loads(out.stdout)
        assert doc["user"] == "edge" and doc["permissions"] == host_permissions("edge")
        assert nf.passwords["edge"] not in out.stdout
        # a host may not create buckets ...
        out = CliRunner().invoke(cli, ["fleet", "init", "-c", str(cfg),
                                       "--admin-credentials", creds])
        assert out.exit_code == 1 and "argoctl fleet init:" in out.stderr
        assert nf.passwords["edge"] not in out.stderr
        async def main():
            # the agent starts before the buckets exist: connected, not healthy
            bus = make_bus(nf, "edge", FleetView("edge", 15, {}))
            await bus.start()
            try:
                await asyncio.sleep(2.0)
                assert bus.connected and not bus.healthy and bus.state == "degraded"
                assert "not found" in bus.last_error.lower()
                # ... the admin makes them
                out = await asyncio.to_thread(
                    CliRunner().invoke, cli, ["fleet", "init", "-c", str(cfg),
                                              "--admin-credentials", nf.credentials("admin")])
                assert out.exit_code == 0, out.output
                assert "argoctl_members, argoctl_legs: ttl 15 s" in out.stdout
                assert await until(lambda: bus.healthy)
            finally:
                await bus.stop()
        asyncio.run(main())


def test_bench_fleet_prints_the_issues_keys():
    """`argoctl bench fleet` (decision level, real agents and bus), small: its keys,
    and what must hold at any size: the plan never probes more, nothing is lost
    in latency, and the only relay that reaches the origin gets every edge."""
    from argoctl.bench import fleet
    out = fleet.run(hosts_n=4, paths=3, dests=2, seconds=5.0, interval_ms=500, alternatives=1)
    for key in ("hosts", "destinations", "probes_per_origin_s_off", "probes_per_origin_s_on",
                "probes_per_host_s_off", "probes_per_host_s_on", "regret_pct",
                "orpheus_reach_s"):
        assert key in out, key
    assert out["fleet_mode_hosts"] == 4
    # k = 1 of 3 paths: the choice and one more (direct) per destination
    assert out["probes_per_origin_s_on"] < 0.85 * out["probes_per_origin_s_off"]
    assert out["regret_pct"] <= 5
    assert out["orpheus_reach_s"] is not None
