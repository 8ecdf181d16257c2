"""Truncated and random input: never a crash, never a verdict other than
TC_ACT_OK, never a mark. A catch-all prefix is installed, so a packet that
parsed would be steered: passing untouched proves the parser refused it."""

import random

import pytest

from argoctl import bpfsys, maps
from packets import ETH, IP, Dot1Q, IPv6, IPv6ExtHdrHopByHop, TCP, UDP, Ether
from conftest import mark

ETH_HLEN = 14


@pytest.fixture
def catch_all(dp):
    dp.maps.set_pathsets({1: [maps.Path(path_id=1, mark=mark(1))]})
    dp.maps.set_prefixes([("0.0.0.0/0", 1), ("::/0", 1)])
    return dp


FULL = {
    "tcp4": bytes(Ether(**ETH) / IP(dst="198.51.100.5") / TCP()),
    "udp4": bytes(Ether(**ETH) / IP(dst="198.51.100.5") / UDP()),
    "tcp4-options": bytes(Ether(**ETH) / IP(dst="198.51.100.5", options=b"\x01" * 8) / TCP()),
    "tcp6": bytes(Ether(**ETH) / IPv6(dst="2001:db8::5") / TCP()),
    "udp6-hbh": bytes(Ether(**ETH) / IPv6(dst="2001:db8::5") / IPv6ExtHdrHopByHop() / UDP()),
    # Behind a VLAN tag the kernel's test harness does not look at the IP
    # header, so every cut inside it reaches the program's own checks.
    "vlan-tcp4": bytes(Ether(**ETH) / Dot1Q(vlan=5) / IP(dst="198.51.100.5") / TCP()),
    "vlan-tcp6": bytes(Ether(**ETH) / Dot1Q(vlan=5) / IPv6(dst="2001:db8::5") / TCP()),
}
# Newer kernels refuse to build an skb from an untagged IPv4/IPv6 frame shorter
# than its fixed network header (EINVAL before the program runs).
HARNESS_MIN = {0x0800: ETH_HLEN + 20, 0x86DD: ETH_HLEN + 40}


@pytest.mark.parametrize("name", sorted(FULL))
def test_every_truncation_passes_untouched(catch_all, name):
    full = FULL[name]
    # The whole packet is steered: the truncations below are refused, not unmatched.
    assert catch_all.run(full) == (0, mark(1))
    ethertype = int.from_bytes(full[12:14], "big")
    ran = 0
    for n in range(ETH_HLEN, len(full)):
        try:
            result = catch_all.run(full[:n])
        except bpfsys.BpfError as e:
            assert e.errno == 22 and n < HARNESS_MIN.get(ethertype, 0), f"{name} cut to {n}: {e}"
            continue
        assert result == (0, 0), f"{name} cut to {n} bytes"
        ran += 1
    assert ran >= 8


def test_shorter_than_ethernet_is_refused_by_the_kernel(catch_all):
    # BPF_PROG_TEST_RUN needs an Ethernet header to build an skb; the program
    # is never reached. (A real device never delivers such a frame either.)
    for n in range(ETH_HLEN):
        with pytest.raises(bpfsys.BpfError):
            catch_all.run(FULL["tcp4"][:n])


def test_random_bytes_are_never_steered(catch_all):
    rng = random.Random(20261127)  # fixed seed: reproducible
    for i in range(10_000):
        n = rng.randint(ETH_HLEN, 128)
        pkt = bytes(rng.getrandbits(8) for _ in range(n))
        assert catch_all.run(pkt) == (0, 0), f"random packet #{i}: {pkt.hex()}"
