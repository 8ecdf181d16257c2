"""scapy packet builders for the BPF tests."""

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether

ETH = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
CLIENT4 = "192.0.2.10"
CLIENT6 = "2001:db8:c::10"


def tcp4(dst, sport=40000, dport=443, src=CLIENT4, flags="S"):
    return bytes(Ether(**ETH) / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags))


def udp4(dst, sport=40000, dport=53, src=CLIENT4, payload=b"x" * 16):
    return bytes(Ether(**ETH) / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)


def tcp6(dst, sport=40000, dport=443, src=CLIENT6, flags="S", ext=()):
    l3 = IPv6(src=src, dst=dst)
    for e in ext:
        l3 = l3 / e
    return bytes(Ether(**ETH) / l3 / TCP(sport=sport, dport=dport, flags=flags))


def udp6(dst, sport=40000, dport=53, src=CLIENT6):
    return bytes(Ether(**ETH) / IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / (b"y" * 16))


__all__ = ["ARP", "Dot1Q", "Ether", "ICMP", "IP", "IPv6", "IPv6ExtHdrDestOpt",
           "IPv6ExtHdrFragment", "IPv6ExtHdrHopByHop", "TCP", "UDP", "ETH",
           "tcp4", "udp4", "tcp6", "udp6", "CLIENT4", "CLIENT6"]


from functools import lru_cache  # noqa: E402
import ipaddress  # noqa: E402


@lru_cache(maxsize=64)
def _template4(dst, dport, flags):
    return bytearray(tcp4(dst, dport=dport, flags=flags))


def tcp4_fast(dst, src=CLIENT4, sport=40000, dport=443, flags="S"):
    """tcp4() for many flows: scapy builds one template, then source address and
    port are patched in (checksums are not checked by the datapath)."""
    pkt = bytearray(_template4(dst, dport, flags))
    pkt[26:30] = ipaddress.IPv4Address(src).packed
    pkt[34:36] = sport.to_bytes(2, "big")
    return bytes(pkt)
