"""datapath._route_ifnames: the devices the main table sends addresses out of,
matched by longest prefix (one look-up per prefix length), against a brute force
of the same routes."""

import ipaddress

from argoctl import datapath


class Msg(dict):
    def __init__(self, dst, dst_len, oif=None, multipath=None, type=1):
        super().__init__(dst_len=dst_len, type=type)
        self.attrs = {"RTA_DST": dst, "RTA_OIF": oif, "RTA_MULTIPATH": multipath}

    def get_attr(self, name):
        return self.attrs.get(name)


ROUTES = {
    2: [Msg(None, 0, oif=2),                               # default via eth0
        Msg("198.51.100.0", 24, oif=3),
        Msg("198.51.100.0", 24, oif=4),                   # same prefix again: the first wins
        Msg("198.51.100.128", 25, multipath=[{"oif": 5}, {"oif": 6}]),
        Msg("203.0.113.0", 24, type=6),                   # blackhole: no device
        Msg("127.0.0.0", 8, oif=1)],
    10: [Msg("2001:db8:1::7", 128, oif=7),
         Msg("2001:db8::", 32, oif=8),
         Msg("fe80::", 64, oif=7)],
}
NAMES = {1: "lo", 2: "eth0", 3: "a", 4: "b", 5: "m1", 6: "m2", 7: "ag-p7", 8: "c"}


class Snap:
    def routes(self, af, table=0):
        assert table == 254
        return ROUTES[af]


def brute(addresses):
    out = []
    for a in addresses:
        ip = ipaddress.ip_address(a)
        af = 2 if ip.version == 4 else 10
        best = None
        for m in ROUTES[af]:
            if m["type"] != 1:
                continue
            net = ipaddress.ip_network(f"{m.get_attr('RTA_DST') or ('0.0.0.0' if af == 2 else '::')}"
                                       f"/{m['dst_len']}")
            if ip in net and (best is None or net.prefixlen > best[0].prefixlen):
                best = (net, m)
        if best is None:
            continue
        m = best[1]
        oifs = [m.get_attr("RTA_OIF")] if m.get_attr("RTA_OIF") else \
            [nh["oif"] for nh in m.get_attr("RTA_MULTIPATH")]
        for oif in oifs:
            if NAMES[oif] != "lo" and NAMES[oif] not in out:
                out.append(NAMES[oif])
    return out


def test_longest_prefix_per_address_as_a_brute_force_finds_it():
    links = {name: {"index": i} for i, name in NAMES.items()}
    addresses = ["198.51.100.7", "198.51.100.200", "192.0.2.1", "127.0.0.1", "203.0.113.5",
                 "2001:db8:1::7", "2001:db8:1::8", "2001:db9::1", "fe80::1"]
    got = datapath._route_ifnames(None, [ipaddress.ip_address(a) for a in addresses],
                                  Snap(), links)
    assert got == brute(addresses) == ["a", "m1", "m2", "eth0", "ag-p7", "c"]
