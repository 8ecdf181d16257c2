"""Protective reroute in the tc datapath: a SYN seen again for a flow with no
SYN-ACK since moves the flow, at once, to the next usable path of its
destination's set (never back to one it was on), at most MAX_REROUTES times;
each move is counted against the path left. A SYN-ACK first stops it."""

import pytest

from argoctl import maps
from packets import tcp4, tcp6
from conftest import MASK, mark, paths

ORIGIN4, ORIGIN6 = "198.51.100.10", "2001:db8:5::10"
OTHER4, OTHER6 = "203.0.113.10", "2001:db8:6::10"
FAMILIES = [pytest.param((tcp4, ORIGIN4, OTHER4, "192.0.2.10"), id="ipv4"),
            pytest.param((tcp6, ORIGIN6, OTHER6, "2001:db8:c::10"), id="ipv6")]


def setup(dp, origin_paths, other_paths=None):
    dp.maps.set_prefixes([("198.51.100.0/24", 1), ("2001:db8:5::/48", 1),
                          ("203.0.113.0/24", 2), ("2001:db8:6::/48", 2)])
    dp.maps.set_pathsets({1: origin_paths, 2: other_paths or paths(1, 0, 0)})


def syn(fam, dst, sport):
    build, *_ = fam
    return build(dst, sport=sport)


def synack(fam, origin, sport):
    build, _, _, client = fam
    return build(client, src=origin, sport=443, dport=sport, flags="SA")


def reroutes(dp, *path_ids):
    return tuple(dp.maps.path_stats(p).reroutes for p in path_ids)


@pytest.mark.parametrize("fam", FAMILIES)
def test_second_syn_repins_to_the_next_path(dp, fam):
    _, origin, _, _ = fam
    setup(dp, paths(1, 0, 0))           # all on path 1; 2 and 3 up with weight 0
    assert dp.mark_of(syn(fam, origin, 41000)) == mark(1)
    # The retransmission itself goes out on the next path of the set.
    assert dp.mark_of(syn(fam, origin, 41000)) == mark(2)
    assert reroutes(dp, 1, 2, 3) == (1, 0, 0)
    # The flow stays there: its ACKs and data follow the new path.
    build = fam[0]
    assert dp.mark_of(build(origin, sport=41000, flags="A")) == mark(2)
    st1, st2 = dp.maps.path_stats(1), dp.maps.path_stats(2)
    assert (st1.syns, st2.syns) == (1, 1)
    # A new flow of the same destination is not affected: weights still rule.
    assert dp.mark_of(syn(fam, origin, 41001)) == mark(1)


@pytest.mark.parametrize("fam", FAMILIES)
def test_synack_first_prevents_the_repin(dp, fam):
    _, origin, _, _ = fam
    setup(dp, paths(1, 0, 0))
    assert dp.mark_of(syn(fam, origin, 42000)) == mark(1)
    assert dp.run(synack(fam, origin, 42000), prog="passive_eth")[0] == 0
    # The SYN again (say the SYN-ACK was lost behind us): the path answered, stay.
    assert dp.mark_of(syn(fam, origin, 42000)) == mark(1)
    assert dp.mark_of(syn(fam, origin, 42000)) != mark(1)   # ... until it goes unanswered
    assert reroutes(dp, 1)[0] == 1


@pytest.mark.parametrize("fam", FAMILIES)
def test_bound_holds_and_never_back(dp, fam):
    _, origin, _, _ = fam
    setup(dp, paths(1, 0, 0, 0))        # four paths: more than the bound allows
    seen = [dp.mark_of(syn(fam, origin, 43000)) for _ in range(2 + maps.MAX_REROUTES + 3)]
    moved = [mark(1), mark(2), mark(3)][:maps.MAX_REROUTES + 1]
    assert seen[:len(moved)] == moved                 # each re-pin to a path not yet tried
    assert set(seen[len(moved):]) == {moved[-1]}      # then the flow stays where it is
    assert sum(reroutes(dp, 1, 2, 3, 4)) == maps.MAX_REROUTES


def test_down_paths_skipped_and_wraps_around(dp):
    fam = FAMILIES[0].values[0]
    # Pinned on path 3 (weights), path 4 down: the next usable one wraps to 1.
    setup(dp, paths(0, 0, 1, 0, down=(4,)))
    assert dp.mark_of(syn(fam, ORIGIN4, 44000)) == mark(3)
    assert dp.mark_of(syn(fam, ORIGIN4, 44000)) == mark(1)
    assert dp.mark_of(syn(fam, ORIGIN4, 44000)) == mark(2)


def test_no_usable_path_left_keeps_the_flow(dp):
    fam = FAMILIES[0].values[0]
    setup(dp, paths(1, 0, down=(2,)))
    for _ in range(3):
        assert dp.mark_of(syn(fam, ORIGIN4, 45000)) == mark(1)
    assert reroutes(dp, 1)[0] == 0


@pytest.mark.parametrize("fam", FAMILIES)
def test_flow_of_another_destination_untouched(dp, fam):
    _, origin, other, _ = fam
    setup(dp, paths(1, 0, 0), other_paths=paths(1, 0, 0))
    for _ in range(2):
        dp.mark_of(syn(fam, origin, 46000))           # this one moves ...
    assert dp.mark_of(syn(fam, other, 46000)) == mark(1)
    assert dp.mark_of(syn(fam, other, 46001)) == mark(1)
    # ... the other destination's flows (even the same source port) do not.
    build = fam[0]
    assert dp.mark_of(build(other, sport=46000, flags="A")) == mark(1)
    assert dp.mark_of(build(other, sport=46001, flags="A")) == mark(1)
    assert reroutes(dp, 1, 2) == (1, 0)


def test_reroute_off_keeps_the_flow(dp):
    fam = FAMILIES[0].values[0]
    dp.maps.write_settings(MASK, reroute=False)
    setup(dp, paths(1, 0, 0))
    for _ in range(3):
        assert dp.mark_of(syn(fam, ORIGIN4, 47000)) == mark(1)
    assert reroutes(dp, 1)[0] == 0
    assert not maps.reroute_on(dp.maps.settings())
