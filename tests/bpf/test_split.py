"""Per-flow choice: the split follows the weights, a flow keeps its path, a
weight change moves no pinned flow, a path marked down moves all of its flows."""

import random
from collections import Counter

import pytest

from argoctl import maps
from packets import tcp4, tcp4_fast, tcp6, udp4
from conftest import mark, paths

DEST = "198.51.100.10"
# Chi-square critical values at p = 0.001 (upper tail) by degrees of freedom,
# from the standard table (scipy.stats.chi2.ppf(0.999, df)).
CHI2_CRIT_P001 = {1: 10.828, 2: 13.816, 3: 16.266, 5: 20.515, 7: 24.322}


def flows(n, seed=1):
    rng = random.Random(seed)
    seen = set()
    while len(seen) < n:
        seen.add((f"192.0.2.{rng.randint(1, 254)}", rng.randint(1024, 65535)))
    return sorted(seen)


def ack4_fast(dst, **kw):
    """A later packet of the flow. (A SYN sent again with no SYN-ACK seen would
    be a retransmission, and protective reroute moves it: test_reroute_tc.py.)"""
    return tcp4_fast(dst, flags="A", **kw)


def marks_of(dp, fl, build=tcp4_fast):
    return [dp.mark_of(build(DEST, src=src, sport=sport)) for src, sport in fl]


@pytest.fixture
def one_dest(dp):
    dp.maps.set_prefixes([("198.51.100.0/24", 1)])
    return dp


def chi_square(observed: Counter, weights, n) -> float:
    total = sum(weights)
    return sum((observed[mark(i + 1)] - n * w / total) ** 2 / (n * w / total)
               for i, w in enumerate(weights))


@pytest.mark.parametrize("weights", [(1, 1), (5, 1, 3, 1), (1, 2, 3, 4, 5, 6, 7, 8)])
def test_split_follows_weights(one_dest, weights):
    one_dest.maps.set_pathsets({1: paths(*weights)})
    fl = flows(10_000)
    got = Counter(marks_of(one_dest, fl))
    assert set(got) <= {mark(i + 1) for i in range(len(weights))}
    stat = chi_square(got, weights, len(fl))
    assert stat < CHI2_CRIT_P001[len(weights) - 1], (stat, got)


def test_zero_weight_path_gets_no_new_flows(one_dest):
    one_dest.maps.set_pathsets({1: paths(0, 1, 0)})
    assert set(marks_of(one_dest, flows(500))) == {mark(2)}


def test_same_flow_same_path_even_after_the_flow_table_forgets_it(one_dest):
    one_dest.maps.set_pathsets({1: paths(1, 1, 1, 1)})
    fl = flows(300, seed=2)
    first = marks_of(one_dest, fl)
    for _ in range(3):    # the flows' later packets (a SYN again would be rerouted)
        assert marks_of(one_dest, fl, ack4_fast) == first
    one_dest.maps.clear_flows()   # same hash -> same choice without the pin
    assert marks_of(one_dest, fl) == first
    assert len(set(first)) == 4


def test_ipv6_and_udp_flows_are_pinned_too(dp):
    dp.maps.set_prefixes([("2001:db8::/32", 1), ("198.51.100.0/24", 1)])
    dp.maps.set_pathsets({1: paths(1, 1)})
    fl = flows(200, seed=3)
    v6 = [dp.mark_of(tcp6("2001:db8::10", sport=sp)) for _, sp in fl]
    u4 = marks_of(dp, fl, build=udp4)
    dp.maps.set_pathsets({1: paths(1, 0)})
    assert [dp.mark_of(tcp6("2001:db8::10", sport=sp, flags="A")) for _, sp in fl] == v6
    assert marks_of(dp, fl, build=udp4) == u4


def test_weight_change_moves_no_pinned_flow(one_dest):
    one_dest.maps.set_pathsets({1: paths(1, 1, 1)})
    old = flows(2000, seed=4)
    before = marks_of(one_dest, old)
    one_dest.maps.set_pathsets({1: paths(0, 0, 1)})   # only path 3 takes new flows
    assert marks_of(one_dest, old, ack4_fast) == before
    assert set(marks_of(one_dest, flows(300, seed=5))) == {mark(3)}


def test_path_down_moves_every_flow_of_it_and_only_those(one_dest):
    one_dest.maps.set_pathsets({1: paths(1, 1, 1)})
    fl = flows(2000, seed=6)
    before = marks_of(one_dest, fl)
    on_2 = sum(m == mark(2) for m in before)
    assert on_2 > 500
    one_dest.maps.set_pathsets({1: paths(1, 1, 1, down={2})})
    after = marks_of(one_dest, fl, ack4_fast)
    for b, a in zip(before, after):
        if b == mark(2):
            assert a in (mark(1), mark(3))
        else:
            assert a == b
    assert one_dest.maps.path_stats(2).flows_moved == on_2
    # Back up: moved flows stay where they went (no flap back).
    one_dest.maps.set_pathsets({1: paths(1, 1, 1)})
    assert marks_of(one_dest, fl, ack4_fast) == after


def test_all_paths_down_passes_untouched(one_dest):
    one_dest.maps.set_pathsets({1: paths(1, 1)})
    fl = flows(100, seed=7)
    marks_of(one_dest, fl)
    one_dest.maps.set_pathsets({1: paths(1, 1, down={1, 2})})
    assert set(marks_of(one_dest, fl)) == {0}
    assert set(marks_of(one_dest, flows(100, seed=8))) == {0}


def test_reset_flows_replaces_pinned_flows_by_current_weights(one_dest):
    one_dest.maps.set_pathsets({1: paths(1, 1)})
    fl = flows(400, seed=9)
    marks_of(one_dest, fl)
    one_dest.maps.set_pathsets({1: paths(1, 0)}, reset_flows=True)
    assert set(marks_of(one_dest, fl)) == {mark(1)}


def test_prefix_remap_moves_pinned_flows_to_the_new_destination(one_dest):
    one_dest.maps.set_pathsets({1: paths(1), 2: [maps.Path(path_id=7, mark=mark(7))]})
    fl = flows(50, seed=10)
    assert set(marks_of(one_dest, fl)) == {mark(1)}
    one_dest.maps.set_prefixes([("198.51.100.0/24", 2)])
    assert set(marks_of(one_dest, fl)) == {mark(7)}


def test_counters_per_path_and_destination(one_dest):
    one_dest.maps.set_pathsets({1: paths(1, 1)})
    fl = flows(100, seed=11)
    pkts = [tcp4(DEST, src=s, sport=p) for s, p in fl]
    got = [one_dest.mark_of(p) for p in pkts]
    ds = one_dest.maps.dest_stats(1)
    assert ds.packets == 100 and ds.bytes == sum(len(p) for p in pkts)
    for pid in (1, 2):
        st = one_dest.maps.path_stats(pid)
        assert st.packets == got.count(mark(pid))
        assert st.syns == st.packets   # tcp4() builds SYNs


def test_a_gro_merged_skb_counts_its_wire_packets(one_dest):
    import struct as st
    from argoctl import bpfsys
    one_dest.maps.set_pathsets({1: paths(1)})
    ctx = bytearray(168)
    st.pack_into("<I", ctx, 164, 10)          # __sk_buff.gso_segs: 10 segments in one skb
    bpfsys.test_run(one_dest.progs["steer_eth"], tcp4(DEST, flags="A"), ctx=bytes(ctx))
    assert one_dest.maps.path_stats(1).packets == 10
    assert one_dest.maps.dest_stats(1).packets == 10
