"""Fixtures: map state + packet -> verdict and mark. Longest prefix wins,
unmatched and unsteerable packets pass untouched, marks already set stay."""

import pytest

from packets import (ARP, ETH, ICMP, IP, UDP, Dot1Q, Ether, IPv6, IPv6ExtHdrDestOpt,
                     IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, TCP, tcp4, tcp6, udp4, udp6)
from argoctl import maps
from conftest import MASK, mark

# dest id -> prefixes; dest N is steered onto path N (one path, weight 1).
TABLE = {
    1: ["198.51.100.0/24"],
    2: ["198.51.100.128/25"],
    3: ["198.51.100.200/32"],
    4: ["2001:db8::/32"],
    5: ["2001:db8:aa::/48"],
    6: ["2001:db8:aa:bb::1/128"],
}


@pytest.fixture
def table(dp):
    dp.maps.set_pathsets({d: [maps.Path(path_id=d, mark=mark(d))] for d in TABLE})
    dp.maps.set_prefixes([(p, d) for d, ps in TABLE.items() for p in ps])
    return dp


@pytest.mark.parametrize("build, dst, want", [
    (tcp4, "198.51.100.5", mark(1)),
    (tcp4, "198.51.100.127", mark(1)),
    (tcp4, "198.51.100.128", mark(2)),
    (udp4, "198.51.100.199", mark(2)),
    (udp4, "198.51.100.200", mark(3)),
    (udp4, "198.51.100.201", mark(2)),
    (tcp4, "203.0.113.1", 0),                    # no match
    (tcp4, "198.51.101.1", 0),
    (tcp6, "2001:db8:1::1", mark(4)),
    (tcp6, "2001:db8:aa::1", mark(5)),
    (udp6, "2001:db8:aa:bb::1", mark(6)),
    (udp6, "2001:db8:aa:bb::2", mark(5)),
    (tcp6, "2001:db9::1", 0),
], ids=lambda v: v.__name__ if callable(v) else str(v))
def test_longest_prefix_wins(table, build, dst, want):
    assert table.mark_of(build(dst)) == want


def test_protocols_and_encapsulations(table):
    vlan = bytes(Ether(**ETH) / Dot1Q(vlan=7) / IP(src="192.0.2.1", dst="198.51.100.130") / UDP())
    qinq = bytes(Ether(**ETH) / Dot1Q(vlan=7) / Dot1Q(vlan=8) / IP(dst="198.51.100.130") / UDP())
    icmp = bytes(Ether(**ETH) / IP(dst="198.51.100.7") / ICMP())
    ext = tcp6("2001:db8:aa::9", ext=[IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt()])
    atomic_frag = tcp6("2001:db8:aa::9", ext=[IPv6ExtHdrFragment(offset=0, m=0)])
    options = bytes(Ether(**ETH) / IP(dst="198.51.100.3", options=b"\x01" * 8) / TCP())
    assert table.mark_of(vlan) == mark(2)
    assert table.mark_of(qinq) == mark(2)
    assert table.mark_of(icmp) == mark(1)
    assert table.mark_of(ext) == mark(5)
    assert table.mark_of(atomic_frag) == mark(5)
    assert table.mark_of(options) == mark(1)


def test_unsteerable_passes_untouched(table):
    arp = bytes(Ether(**ETH) / ARP(pdst="198.51.100.5"))
    first_frag = bytes(Ether(**ETH) / IP(dst="198.51.100.5", flags="MF") / UDP() / (b"a" * 64))
    later_frag = bytes(Ether(**ETH) / IP(dst="198.51.100.5", frag=8) / (b"a" * 64))
    frag6 = tcp6("2001:db8:aa::9", ext=[IPv6ExtHdrFragment(offset=4, m=1)])
    too_many_ext = tcp6("2001:db8:aa::9", ext=[IPv6ExtHdrDestOpt()] * 5)
    bad_ihl = bytearray(tcp4("198.51.100.5"))
    bad_ihl[14] = 0x44   # IHL 4 < 5
    bad_version = bytearray(tcp4("198.51.100.5"))
    bad_version[14] = 0x65
    for pkt in (arp, first_frag, later_frag, frag6, too_many_ext, bytes(bad_ihl), bytes(bad_version)):
        assert table.run(pkt) == (0, 0)


def test_mark_already_set_is_untouched(table):
    probe = mark(9)  # a probe for path 9 carries path 9's mark
    assert table.run(tcp4("198.51.100.5"), mark=probe) == (0, probe)
    assert table.run(tcp6("2001:db8::1"), mark=probe | 0x5) == (0, probe | 0x5)


def test_bits_outside_the_mask_are_kept(table):
    other = 0xAB00_00CD & ~MASK
    assert table.run(tcp4("198.51.100.5"), mark=other) == (0, other | mark(1))


def test_unprogrammed_datapath_steers_nothing(table):
    table.maps.write_settings(0)  # mask 0 = steering off
    assert table.run(tcp4("198.51.100.5")) == (0, 0)
