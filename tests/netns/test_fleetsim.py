"""The fleet-bus simulation (argoctl bench fleetsim) at a tiny size against a real
nats-server on loopback: what the hosts publish is what the agent ingests, leg
for leg, and every bad value is counted under its reason."""

from argoctl.bench.fleetsim import Step, extrapolate, run_step
from argoctl.bench.fleetsim_roles import BAD_REASONS
from argoctl.fleet.schema import shard_count

HOSTS, DESTS, SECONDS = 3, 450, 3


def test_fleetsim_every_published_leg_is_ingested_and_bad_values_are_counted():
    r = run_step(Step(HOSTS, DESTS, SECONDS, watchers=1, track=True))
    shards = shard_count(DESTS)
    # each host, each second: its membership, its tunnel legs and every shard (under the cap)
    assert r["shards_per_host"] == shards == 4
    assert r["target_puts"] == HOSTS * (shards + 2) * SECONDS
    assert r["put_errors"] == 0 and r["disconnects"] == 0
    assert r["puts"] == r["target_puts"]
    assert r["published_direct_legs"] == HOSTS * DESTS * SECONDS
    # published = received, by the agent and by the extra watcher
    assert r["agent_values"] == r["published_legs_values"] + r["bad_injected"]
    assert r["extra_watchers_values"] == r["agent_values"]
    assert r["agent_member_values"] == r["published_member_values"] == HOSTS * SECONDS
    # every published leg was validated, stored and composed; the agent ends with
    # exactly the last value of every (host, destination)
    assert r["agent_legs_composed"] == r["published_direct_legs"]
    assert len(r["published_last"]) == HOSTS * DESTS
    assert r["agent_last"] == r["published_last"]
    # one bad value per reason, each counted once, nothing good rejected
    assert r["bad_injected"] == len(BAD_REASONS)
    assert r["rejected"] == BAD_REASONS
    assert r["complete"]
    assert r["server_rss_mib"] > 0 and r["agent_us_per_leg"] > 0

    full = extrapolate(r)
    assert full["bus_in_msgs_per_s"] == 300 * (1 + 50)       # the cap binds at 512 shards
    assert full["leg_refresh_s"] == 10.26                      # 513 values, 50 a second
    assert full["watch_all"]["agent_legs_per_s"] == round(300 * 50 * 100_000 / 513)
