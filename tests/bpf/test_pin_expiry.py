"""A pinned flow that has gone quiet: a UDP (non-TCP) pin idle for PIN_IDLE_NS
is placed anew by the weights, as conntrack forgets an unreplied UDP entry; a
TCP pin never expires (moving a live connection off a masquerading relay
breaks it); a flow that keeps sending keeps its pin however long it lives."""

import time

import pytest

from argoctl import bpfsys, maps
from packets import tcp4, udp4, udp6
from conftest import mark, paths

ORIGIN4, ORIGIN6 = "198.51.100.10", "2001:db8:5::10"


def coarse_now() -> int:
    # bpf_ktime_get_coarse_ns is CLOCK_MONOTONIC_COARSE: CLOCK_MONOTONIC at
    # the last tick, so at most a few ms behind this (the bounds are seconds)
    return time.monotonic_ns()


def only_flow(dp) -> tuple[maps.FlowKey, maps.FlowVal]:
    fd = dp.maps.fd["flows"]
    key = maps.FlowKey()
    assert bpfsys.next_key(fd, None, key)
    nxt = maps.FlowKey()
    assert not bpfsys.next_key(fd, key, nxt), "one flow expected"
    return key, dp.maps.flow(key)


def idle_for(dp, seconds: float) -> None:
    """Make the one pinned flow look as if its last packet was `seconds` ago."""
    key, val = only_flow(dp)
    val.seen_ns = coarse_now() - int(seconds * 1e9)
    bpfsys.update(dp.maps.fd["flows"], key, val)


@pytest.fixture
def relay_then_direct(dp):
    """A flow pinned on path 1 (the relay, weight 1), then the weights move
    everything to path 2 (direct) with both paths up."""
    dp.maps.set_prefixes([("198.51.100.0/24", 1), ("2001:db8:5::/48", 1)])
    dp.maps.set_pathsets({1: paths(1, 0)})

    def move():
        dp.maps.set_pathsets({1: paths(0, 1)})
    return move


@pytest.mark.parametrize("build,origin", [(udp4, ORIGIN4), (udp6, ORIGIN6)], ids=["ipv4", "ipv6"])
def test_idle_udp_pin_follows_the_weights_again(dp, relay_then_direct, build, origin):
    assert dp.mark_of(build(origin, sport=5353)) == mark(1)
    relay_then_direct()
    assert dp.mark_of(build(origin, sport=5353)) == mark(1)     # live pin: stays
    idle_for(dp, maps.PIN_IDLE_NS / 1e9 - 5)
    assert dp.mark_of(build(origin, sport=5353)) == mark(1)     # quiet, not yet idle
    idle_for(dp, maps.PIN_IDLE_NS / 1e9 + 1)
    assert dp.mark_of(build(origin, sport=5353)) == mark(2)     # a new flow: the weights
    assert dp.maps.path_stats(1).flows_moved == 1
    _, val = only_flow(dp)
    assert val.path_id == 2 and coarse_now() - val.seen_ns < 2 * maps.PIN_TOUCH_NS


def test_active_udp_flow_keeps_its_pin(dp, relay_then_direct):
    """Each packet more than PIN_TOUCH_NS after the last recorded one refreshes
    the pin, so a flow that sends every few seconds never expires."""
    assert dp.mark_of(udp4(ORIGIN4, sport=5353)) == mark(1)
    relay_then_direct()
    idle_for(dp, maps.PIN_IDLE_NS / 1e9 - 2)
    assert dp.mark_of(udp4(ORIGIN4, sport=5353)) == mark(1)
    _, val = only_flow(dp)
    assert coarse_now() - val.seen_ns < 2 * maps.PIN_TOUCH_NS     # refreshed
    idle_for(dp, 10)            # 10 s after that refresh: still well inside the bound
    assert dp.mark_of(udp4(ORIGIN4, sport=5353)) == mark(1)


def test_idle_tcp_pin_stays(dp, relay_then_direct):
    assert dp.mark_of(tcp4(ORIGIN4, sport=41000)) == mark(1)
    relay_then_direct()
    idle_for(dp, 3600)
    assert dp.mark_of(tcp4(ORIGIN4, sport=41000, flags="A")) == mark(1)
    assert dp.maps.path_stats(1).flows_moved == 0
