"""rtbatch builds the same rtnetlink requests as pyroute2's IPRoute API: for every
kind of address, route and rule request the Applier makes, the bytes rtbatch
encodes equal those IPBatch (IPRoute's request compiler) encodes, sequence
number and port id aside (the kernel reads neither in a request)."""

from __future__ import annotations

import socket

import pytest
from pyroute2 import IPBatch

from argoctl import rtbatch

V4, V6 = socket.AF_INET, socket.AF_INET6

CASES = [
    (("route", "add", V4, 7201, 5, None, 0, 176),
     lambda b: b.route("add", family=V4, table=7201, oif=5, proto=176, dst_len=0)),
    (("route", "replace", V6, 7201, 5, None, 0, 176),
     lambda b: b.route("replace", family=V6, table=7201, oif=5, proto=176, dst_len=0)),
    (("route", "del", V6, 7201, 5, None, 0, 176),
     lambda b: b.route("del", family=V6, table=7201, oif=5, proto=176, dst_len=0)),
    (("route", "add", V6, 7201, 9, "2001:db8:1::", 64, 176),
     lambda b: b.route("add", family=V6, table=7201, oif=9, proto=176,
                       dst="2001:db8:1::", dst_len=64)),
    (("route", "del", V4, 100, 9, "198.51.100.0", 24, 176),
     lambda b: b.route("del", family=V4, table=100, oif=9, proto=176,
                       dst="198.51.100.0", dst_len=24)),
    (("addr", "add", V4, 7, 32, "192.0.2.1", "192.0.2.2"),
     lambda b: b.addr("add", index=7, prefixlen=32, family=V4, local="192.0.2.1",
                      address="192.0.2.2")),
    (("addr", "del", V6, 7, 128, "2001:db8::1", "2001:db8::2"),
     lambda b: b.addr("del", index=7, prefixlen=128, family=V6, local="2001:db8::1",
                      address="2001:db8::2")),
]
CASES.append((("link_up", 7, "argoctl:relay1"),
              lambda b: b.link("set", index=7, ifalias="argoctl:relay1", state="up")))
CASES.append((("link_del", 7), lambda b: b.link("del", index=7)))
CASES.append((("clsact", 5), lambda b: b.tc("add", "clsact", 5)))
CASES.append((("clsact_del", 5), lambda b: b.tc("del", "clsact", 5)))
CASES.append((("filter_del", 5, 0xFFFFFFF2, 7200, 1),
              lambda b: b.tc("del-filter", "bpf", 5, 1, parent=0xFFFFFFF2, prio=7200,
                             protocol=0x0003)))
CASES.append((("bpf_filter", 5, 0xFFFFFFF2, 7200, 1, 7, "argoctl-passive_l3-12"),
              lambda b: b.tc("replace-filter", "bpf", 5, 1, fd=7, name="argoctl-passive_l3-12",
                             parent=0xFFFFFFF2, prio=7200, classid=1, direct_action=True,
                             protocol=0x0003)))
for cmd in ("add", "del"):
    for fam in (V4, V6):
        for table in (254, 7201):
            CASES.append((("rule", cmd, fam, 7201, 0x1, 0xff, table),
                          lambda b, c=cmd, f=fam, t=table: b.rule(
                              c, family=f, priority=7201, fwmark=0x1, fwmask=0xff, table=t,
                              action="FR_ACT_TO_TBL")))
# a path table's drop (plan: Route type blackhole, its metric; no device) and the
# rule that keeps marked packets from main (`not fwmark 0/MASK blackhole`)
for cmd in ("add", "replace", "del"):
    for fam, dst, dst_len in ((V4, None, 0), (V6, None, 0), (V6, "2001:db8:1::", 64)):
        CASES.append((("route", cmd, fam, 7201, 0, dst, dst_len, 176, 6, 0xff000000),
                      lambda b, c=cmd, f=fam, d=dst, n=dst_len: b.route(
                          c, family=f, table=7201, proto=176, **({"dst": d} if d else {}),
                          dst_len=n, type="blackhole", priority=0xff000000)))
for cmd in ("add", "del"):
    for fam in (V4, V6):
        CASES.append((("rule", cmd, fam, 7263, 0, 0xff, 0, rtbatch.FR_ACT_BLACKHOLE,
                       rtbatch.FIB_RULE_INVERT),
                      lambda b, c=cmd, f=fam: b.rule(
                          c, family=f, priority=7263, fwmark=0, fwmask=0xff,
                          action="FR_ACT_BLACKHOLE", flags=rtbatch.FIB_RULE_INVERT)))


def _no_seq(data: bytes) -> bytes:
    return data[:8] + bytes(8) + data[16:]     # nlmsghdr: len, type, flags, SEQ, PID


@pytest.mark.parametrize("args,api", CASES, ids=lambda c: "-".join(map(str, c))
                         if isinstance(c, tuple) else "")
def test_same_bytes_as_pyroute2s_api(args, api):
    ipb = IPBatch()
    try:
        api(ipb)
        want = bytes(ipb.batch)
    finally:
        ipb.close()
    msg = getattr(rtbatch, args[0])(*args[1:])
    msg.encode()
    assert _no_seq(bytes(msg.data)) == _no_seq(want)


def _ipbatch(api) -> bytes:
    ipb = IPBatch()
    try:
        api(ipb)
        return bytes(ipb.batch)
    finally:
        ipb.close()


@pytest.mark.parametrize("action,cmd", [("add", "add"), ("change", "replace"),
                                        ("remove", "del")])
def test_plans_drop_route_is_the_blackhole_route(action, cmd):
    """The plan's drop (what truthful's tables end in) becomes the kernel's
    blackhole route with its metric and no device, whatever the op."""
    from argoctl import names
    from argoctl.plan import Op, Route
    drop = Route(4, 7201, "default", "", "blackhole", names.DROP_METRIC)
    msg = rtbatch.request(Op(action, drop, drop), lambda name: pytest.fail(f"index({name})"))
    msg.encode()
    want = _ipbatch(lambda b: b.route(cmd, family=V4, table=7201, proto=names.RTPROT_ARGOCTL,
                                      dst_len=0, type="blackhole", priority=names.DROP_METRIC))
    assert _no_seq(bytes(msg.data)) == _no_seq(want)


@pytest.mark.parametrize("action,cmd", [("add", "add"), ("remove", "del")])
def test_plans_blackhole_rule_is_the_inverted_fwmark_rule(action, cmd):
    from argoctl.plan import Op, Rule
    rule = Rule(6, 7263, 0, 0xff, 0, "blackhole")
    msg = rtbatch.request(Op(action, rule), lambda name: pytest.fail(f"index({name})"))
    msg.encode()
    want = _ipbatch(lambda b: b.rule(cmd, family=V6, priority=7263, fwmark=0, fwmask=0xff,
                                     action="FR_ACT_BLACKHOLE", flags=rtbatch.FIB_RULE_INVERT))
    assert _no_seq(bytes(msg.data)) == _no_seq(want)


GRE_KEY = {"ikey": 7, "okey": 7, "iflags": 0x2000, "oflags": 0x2000}


@pytest.mark.parametrize("link,kw", [
    (dict(kind="gre", local="192.0.2.1", remote="192.0.2.2", ttl=64),
     dict(gre_local="192.0.2.1", gre_remote="192.0.2.2", gre_ttl=64)),
    (dict(kind="gre", local="192.0.2.1", remote="192.0.2.2", ttl=64, gre_key=7),
     dict(gre_local="192.0.2.1", gre_remote="192.0.2.2", gre_ttl=64,
          **{"gre_" + k: v for k, v in GRE_KEY.items()})),
    (dict(kind="ip6gre", local="2001:db8::1", remote="2001:db8::2", ttl=64, gre_key=7),
     dict(ip6gre_local="2001:db8::1", ip6gre_remote="2001:db8::2", ip6gre_ttl=64,
          **{"ip6gre_" + k: v for k, v in GRE_KEY.items()})),
    (dict(kind="wireguard"), {}),
], ids=["gre", "gre-key", "ip6gre-key", "wireguard"])
def test_tunnel_creation_is_pyroute2s_link_add(link, kw):
    """What the Applier sends to create a tunnel is what IPRoute.link("add") sent."""
    from argoctl.netlink import link_data
    from argoctl.plan import Link
    l = Link(name="ag-relay1", mtu=1400, **link)
    msg = rtbatch.link_add(l.name, l.kind, l.mtu, link_data(l))
    msg.encode()
    want = _ipbatch(lambda b: b.link("add", ifname="ag-relay1", kind=l.kind, mtu=1400, **kw))
    assert _no_seq(bytes(msg.data)) == _no_seq(want)


def test_filter_get_names_the_filter_bpf_filter_makes():
    """The `get` of our filter addresses what `replace-filter` created: same device,
    parent, handle, priority and protocol (tcmsg's fields), and kind bpf."""
    from pyroute2.netlink.rtnl.tcmsg import tcmsg
    made = rtbatch.bpf_filter(5, 0xFFFFFFF2, 7200, 1, 7, "argoctl-steer_l3-3")
    get = rtbatch.filter_get(5, 0xFFFFFFF2, 7200, 1)
    fields = ("index", "parent", "handle", "info")
    decoded = []
    for m in (made, get):
        m.encode()
        d = tcmsg(bytes(m.data))
        d.decode()
        decoded.append(d)
    assert [decoded[1][f] for f in fields] == [decoded[0][f] for f in fields]
    assert decoded[1].get_attr("TCA_KIND") == "bpf"
    assert decoded[1]["header"]["type"] == rtbatch.RTM_GETTFILTER
