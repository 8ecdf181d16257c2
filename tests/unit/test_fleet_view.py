"""The fleet's values and what a reader makes of them (argoctl/fleet/schema.py,
view.py): composition, overhead learning, TTL, and bad data ignored and counted."""

import json

import pytest

from argoctl.fleet import schema
from argoctl.fleet.schema import Leg, Rejected
from argoctl.fleet.view import FleetView

NOW = 1_764_691_200.0
TTL = 15.0
PROBE = "udp:203.0.113.10:7447"


def view(host="edge"):
    return FleetView(host, TTL, {"origin": PROBE, "web": "tcp:203.0.113.20:443"})


def direct(host, legs, at=NOW, shard=0, shards=1):
    return schema.direct_value(host, shard, shards, legs, at)


def up(rtt, at=NOW, loss=0.0, probe=PROBE):
    return Leg("up", rtt, 0.5, loss, at, probe, (3, 3))


def test_values_round_trip_through_the_checks():
    raw = direct("relay1", {"origin": up(11.0, at=NOW - 0.25)})
    host, kind, shard, legs, bad = schema.parse_legs("relay1.d.0", raw, NOW + 1, TTL)
    assert (host, kind, shard, bad) == ("relay1", "d", 0, [])
    leg = legs["origin"]
    assert leg.state == "up" and leg.rtt_ms == 11.0 and leg.probe == PROBE
    assert leg.at == pytest.approx(NOW - 0.25, abs=0.002)     # measurement time, not write
    assert leg.syn == (3, 3)
    t = schema.tunnel_value("edge", {"relay1": Leg("up", 2.0, 0.1, 0.0, NOW)}, NOW)
    assert schema.parse_legs("edge.t", t, NOW, TTL)[3]["relay1"].rtt_ms == 2.0


def test_composition_is_hop_plus_leg_plus_learned_overhead():
    v = view()
    v.ingest_legs("relay1.d.0", direct("relay1", {"origin": up(30.0)}), NOW)
    v.my_tunnel["relay1"] = Leg("up", 5.0, 0.2, 0.0, NOW)
    c = v.compose("relay1", "origin", NOW + 1)
    assert c.state == "up" and c.rtt_ms == pytest.approx(35.0)
    # end to end through relay1 we measure 38 ms: 3 ms the legs do not see
    for _ in range(60):
        v.learn("relay1", "origin", 38.0, NOW + 1)
    assert v.overhead["relay1"] == pytest.approx(3.0, abs=0.01)
    assert v.compose("relay1", "origin", NOW + 1).rtt_ms == pytest.approx(38.0, abs=0.01)


def test_without_my_tunnel_leg_the_relays_published_leg_to_me_is_the_hop():
    v = view()
    v.ingest_legs("relay1.d.0", direct("relay1", {"origin": up(30.0)}), NOW)
    v.ingest_legs("relay1.t", schema.tunnel_value(
        "relay1", {"edge": Leg("up", 4.0, 0.0, 0.1, NOW)}, NOW), NOW)
    c = v.compose("relay1", "origin", NOW)
    assert c.rtt_ms == pytest.approx(34.0)
    assert c.loss == pytest.approx(0.1)


def test_a_relay_that_cannot_reach_the_destination_composes_down():
    v = view()
    v.ingest_legs("relay1.d.0", direct("relay1", {"origin": Leg(
        "down", None, 0.0, 1.0, NOW, PROBE, (5, 0))}), NOW)
    assert v.compose("relay1", "origin", NOW).state == "down"
    assert v.compose("relay2", "origin", NOW) is None        # nothing known


def test_no_estimate_outlives_the_ttl():
    v = view()
    v.ingest_legs("relay1.d.0", direct("relay1", {"origin": up(30.0, at=NOW - 10)},
                                       at=NOW - 1), NOW)
    assert v.compose("relay1", "origin", NOW + 4.9) is not None
    assert v.compose("relay1", "origin", NOW + 5.1) is None   # measured 15.1 s before


@pytest.mark.parametrize("key, raw, reason", [
    ("relay1.d.0", b"not json", "schema"),
    ("relay1.d.0", b"[1, 2]", "schema"),
    ("relay1.d.0", json.dumps({"v": 2, "host": "relay1"}).encode(), "schema"),
    ("relay1.x", direct("relay1", {}), "schema"),
    ("relay1.d.0", json.dumps({"v": 1, "host": "relay1", "at": NOW, "shard": 0,
                               "shards": 1}).encode(), "schema"),       # no legs
    ("relay1.d.0", direct("relay1", {}, at=NOW - 60), "stale"),
    ("relay1.d.0", direct("relay1", {}, at=NOW + 600), "stale"),
    ("relay1.d.0", direct("relay2", {"origin": up(1.0)}), "impostor"),
    ("relay1.d.0", json.dumps({"v": 1, "host": "relay1", "at": float("nan")}).encode()
     .replace(b"NaN", b"1e400"), "absurd"),
])
def test_bad_values_are_ignored_and_counted(key, raw, reason):
    v = view()
    before = dict(v.direct)
    assert v.ingest_legs(key, raw, NOW) is False
    assert v.rejected[reason] == 1
    assert sum(v.rejected.values()) == 1
    assert v.direct == before


@pytest.mark.parametrize("leg, reason", [
    ({"state": "up", "rtt_ms": -1, "jitter_ms": 0, "loss": 0, "age_ms": 0}, "absurd"),
    ({"state": "up", "rtt_ms": 1e9, "jitter_ms": 0, "loss": 0, "age_ms": 0}, "absurd"),
    ({"state": "up", "rtt_ms": 3, "jitter_ms": 0, "loss": 7, "age_ms": 0}, "absurd"),
    ({"state": "great", "rtt_ms": 3, "jitter_ms": 0, "loss": 0, "age_ms": 0}, "absurd"),
    ({"state": "up", "rtt_ms": None, "jitter_ms": 0, "loss": 0, "age_ms": 0,
      "probe": PROBE, "syn": [0, 0]}, "absurd"),
    ({"state": "up", "rtt_ms": 3, "jitter_ms": 0, "loss": 0, "age_ms": 0,
      "probe": PROBE, "syn": [-1, 0]}, "absurd"),
    ({"state": "up", "rtt_ms": "3", "jitter_ms": 0, "loss": 0, "age_ms": 0}, "schema"),
    ({"state": "up", "rtt_ms": 3, "jitter_ms": 0, "loss": 0, "age_ms": 0}, "schema"),  # no probe
    ({"state": "up", "rtt_ms": 3, "jitter_ms": 0, "loss": 0, "age_ms": 0,
      "probe": "icmp:203.0.113.99:0", "syn": [0, 0]}, "mismatch"),
])
def test_a_bad_leg_is_dropped_alone(leg, reason):
    v = view()
    good = schema.leg_doc(up(20.0), NOW)
    raw = json.dumps({"v": 1, "host": "relay1", "at": NOW, "shard": 0, "shards": 1,
                      "legs": {"origin": leg, "web": dict(good, probe="tcp:203.0.113.20:443")}})
    v.ingest_legs("relay1.d.0", raw.encode(), NOW)
    assert v.rejected[reason] == 1
    assert v.leg("relay1", "origin", NOW) is None
    assert v.leg("relay1", "web", NOW).rtt_ms == 20.0


def test_own_values_and_expired_keys():
    v = view()
    v.ingest_legs("edge.d.0", direct("edge", {"origin": up(1.0)}), NOW)
    assert v.leg("edge", "origin", NOW) is None       # we know our own legs better
    v.ingest_legs("relay1.d.0", direct("relay1", {"origin": up(9.0)}), NOW)
    v.ingest_legs("relay1.d.0", None, NOW)            # deleted
    assert v.leg("relay1", "origin", NOW) is None


def test_membership():
    from argoctl.fleet.schema import Member
    v = view()
    m = Member("relay1", NOW, 3, "0.1.0", "relay", NOW - 100, ("192.0.2.2",),
               "198.51.100.130", None, ("edge",), 2, 1000)
    assert v.ingest_member("relay1", schema.member_value(m), NOW)
    assert v.live_members(NOW + 1)["relay1"].role == "relay"
    assert v.live_members(NOW + 16) == {}
    assert not v.ingest_member("relay2", schema.member_value(m), NOW)   # under relay2's key
    assert v.rejected["impostor"] == 1


def test_shards_are_stable_and_bounded():
    assert schema.shard_count(1) == 1
    assert schema.shard_count(200) == 1
    assert schema.shard_count(201) == 2
    assert schema.shard_count(100_000) == 512
    assert schema.shard_of("origin", 8) == schema.shard_of("origin", 8)
    with pytest.raises(Rejected):
        schema.parse_legs_key("relay1.d.x")


def test_a_leg_in_doubt_still_composes_with_its_loss():
    v = view()
    v.ingest_legs("relay1.d.0", direct("relay1", {"origin": Leg(
        "suspect", 30.0, 0.5, 0.2, NOW, PROBE, (0, 0))}), NOW)
    c = v.compose("relay1", "origin", NOW)
    assert c.state == "suspect" and c.rtt_ms == pytest.approx(30.0) and c.loss == 0.2
    v.my_tunnel["relay1"] = Leg("down", None, 0.0, 1.0, NOW)      # cannot reach the relay
    assert v.compose("relay1", "origin", NOW).state == "down"
