"""plan.desired and plan.diff: pure functions from config (and a fixed host view) to
kernel objects and ordered ops."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from argoctl import keys, names, plan
from argoctl.config import Config, Node, Peer, Routing
from argoctl.plan import Address, Link, Nft, Op, Route, Rule, State, Sysctl

ip = ipaddress.ip_address
PRIV = bytes(range(32))


class FixedEnv:
    """The host as plan sees it: every underlay route has this MTU; a fixed key."""

    def __init__(self, mtu=1500):
        self.mtu = mtu
        self.asked = []

    def underlay_mtu(self, address):
        self.asked.append(str(address))
        return self.mtu

    def private_key(self, path):
        return PRIV

    def public_key(self, private):
        return keys.encode(keys.public_key(private))


def peer(name="relay1", id=1, tunnel="gre", address="192.0.2.2", **kw):
    if tunnel == "wireguard":
        kw.setdefault("public_key", keys.encode(keys.public_key(bytes([7] * 32))))
        kw.setdefault("port", 51820)
        kw.setdefault("listen_port", 51820 + id)
    return Peer(name=name, id=id, address=ip(address), tunnel=tunnel,
                tunnel_address=ip(f"198.51.100.{200 + id}"), **kw)


def config(*peers, relay=True, routing=Routing()):
    node = Node(name="edge", address=ip("192.0.2.1"), tunnel_address=ip("198.51.100.200"),
                private_key_file="/nonexistent/edge.key", relay=relay)
    return Config(path="edge.toml", node=node, peers=tuple(peers), destinations=(),
                  routing=routing)


def test_gre_peer_gets_link_address_table_and_rules():
    st = plan.desired(config(peer()), FixedEnv())
    (link,) = st.links
    assert (link.name, link.alias, link.kind, link.mtu) == ("ag-relay1", "argoctl:relay1", "gre",
                                                            1476)
    assert (link.local, link.remote, link.ttl) == ("192.0.2.1", "192.0.2.2", 64)
    assert st.addresses == (Address("ag-relay1", 4, "198.51.100.200", "198.51.100.201"),)
    # the tunnel route, and under it a drop: a missing tunnel never falls through to main
    assert set(st.routes) == {Route(4, 7201, "default", "ag-relay1"),
                              Route(6, 7201, "default", "ag-relay1"),
                              Route(4, 7201, "default", "", "blackhole", names.DROP_METRIC),
                              Route(6, 7201, "default", "", "blackhole", names.DROP_METRIC)}
    assert set(st.rules) == {Rule(4, 7200, 0xFF, 0xFF, 254),
                             Rule(6, 7200, 0xFF, 0xFF, 254),
                             Rule(4, 7201, 0x1, 0xFF, 7201),
                             Rule(6, 7201, 0x1, 0xFF, 7201),
                             # after every path's rule: a marked packet never reaches main
                             Rule(4, 7455, 0, 0xFF, 0, "blackhole"),
                             Rule(6, 7455, 0, 0xFF, 0, "blackhole")}
    assert Sysctl("net/ipv4/conf/ag-relay1/rp_filter", "2") in st.sysctls
    assert Sysctl("net/ipv4/ip_forward", "1") in st.sysctls


@pytest.mark.parametrize("kind,address,key,mtu", [
    ("gre", "192.0.2.2", None, 1476), ("gre", "192.0.2.2", 42, 1472),
    ("gre", "2001:db8::2", None, 1456), ("wireguard", "192.0.2.2", None, 1440),
    ("wireguard", "2001:db8::2", None, 1420)])
def test_mtu_is_underlay_minus_overhead(kind, address, key, mtu):
    p = peer(tunnel=kind, address=address, gre_key=key)
    (link,) = plan.desired(config(p), FixedEnv(1500)).links
    assert link.mtu == mtu
    assert link.kind == {"gre": "gre" if ":" not in address else "ip6gre"}.get(kind, kind)


def test_mtu_follows_the_underlay_device_and_the_override_wins():
    env = FixedEnv(9000)
    assert plan.desired(config(peer()), env).links[0].mtu == 8976
    assert env.asked == ["192.0.2.2"]
    env = FixedEnv(9000)
    assert plan.desired(config(peer(mtu=1300)), env).links[0].mtu == 1300
    assert env.asked == []          # no lookup needed


def test_wireguard_link_holds_keys_but_never_shows_the_private_one():
    p = peer(tunnel="wireguard")
    (link,) = plan.desired(config(p), FixedEnv()).links
    assert link.public_key == keys.encode(keys.public_key(PRIV))
    assert link.peer_public_key == p.public_key
    assert link.endpoint == "192.0.2.2:51820" and link.listen_port == 51821
    assert link.allowed_ips == ("0.0.0.0/0", "::/0") and link.keepalive == 25
    assert link.private_key == PRIV
    text = repr(link) + str(Op("add", link)) + repr(Op("add", link).to_dict())
    assert PRIV.hex() not in text and keys.encode(PRIV) not in text and "private" not in text


def test_wireguard_without_key_file_is_a_plan_error():
    cfg = config(peer(tunnel="wireguard"))
    cfg = dataclasses.replace(cfg, node=dataclasses.replace(cfg.node, private_key_file=None))
    with pytest.raises(plan.PlanError, match="private_key_file"):
        plan.desired(cfg, FixedEnv())


def test_custom_routing_ranges_and_non_relay():
    r = Routing(table_base=1000, rule_priority_base=500, fwmark_mask=0xF0)
    st = plan.desired(config(peer(id=3), relay=False, routing=r), FixedEnv())
    assert Rule(4, 503, 0x30, 0xF0, 1003) in st.rules
    assert Rule(4, 500, 0xF0, 0xF0, 254) in st.rules
    assert Route(6, 1003, "default", "ag-relay1") in st.routes
    assert not [s for s in st.sysctls if s.path in plan.GLOBAL_SYSCTLS]


def test_nft_ruleset_marks_and_restores_per_peer():
    st = plan.desired(config(peer(), peer("relay2", 2, address="192.0.2.3")), FixedEnv())
    (nft,) = st.nft
    assert dict(nft.chains) == {"prerouting": 4, "forward": 2, "postrouting": 1}
    text = repr(nft.commands)
    assert "'ag-relay2'" in text and "'right': 2}" in text   # relay2's mark 0x2 matched
    other = plan.desired(config(peer()), FixedEnv()).nft[0]
    assert other.digest != nft.digest


# ---------------------------------------------------------------------------- diff

def test_diff_from_empty_orders_links_first_and_forwarding_last():
    want = plan.desired(config(peer(), peer("relay2", 2, address="192.0.2.3")), FixedEnv())
    ops = plan.diff(State(), want)
    kinds = [type(op.obj).__name__ for op in ops]
    assert all(op.action == "add" for op in ops)
    assert kinds[:2] == ["Link", "Link"]
    first = {k: kinds.index(k) for k in ("Address", "Route", "Rule", "Nft")}
    assert first["Address"] < first["Route"] < first["Rule"] < first["Nft"]
    assert [op.obj.path for op in ops[-2:]] == list(plan.FORWARDING)
    # routes: tunnel + drop per family; rules: direct, 2 paths, the drop rule per family
    assert len(ops) == 2 + 6 + 2 + (4 + 4) + (6 + 2) + 1 + 2


def test_diff_of_equal_states_is_empty_and_states_compare_regardless_of_order():
    want = plan.desired(config(peer()), FixedEnv())
    shuffled = State(links=want.links, sysctls=tuple(reversed(want.sysctls)),
                     addresses=want.addresses, routes=tuple(reversed(want.routes)),
                     rules=tuple(reversed(want.rules)), nft=want.nft)
    assert shuffled == want
    assert plan.diff(want, want) == []


def test_diff_to_empty_removes_in_reverse_dependency_order():
    cur = plan.desired(config(peer()), FixedEnv())
    ops = plan.diff(cur, State())
    assert all(op.action == "remove" for op in ops)
    kinds = [type(op.obj).__name__ for op in ops]
    assert kinds[0] == "Nft" and kinds[-1] == "Link"
    assert kinds.index("Rule") < kinds.index("Route") < kinds.index("Address")


def test_diff_changes_only_what_drifted():
    want = plan.desired(config(peer()), FixedEnv())
    drifted = dataclasses.replace(
        want, rules=want.rules[1:],
        addresses=(Address("ag-relay1", 4, "198.51.100.99", "198.51.100.201"),),
        links=(dataclasses.replace(want.links[0], mtu=1400),))
    ops = plan.diff(drifted, want)
    summary = sorted((op.action, type(op.obj).__name__) for op in ops)
    assert summary == [("add", "Address"), ("add", "Rule"), ("change", "Link"),
                       ("remove", "Address")]
    addr_ops = [op.action for op in ops if isinstance(op.obj, Address)]
    assert addr_ops == ["add", "remove"]      # make-before-break: never without an address
    link_op = next(op for op in ops if isinstance(op.obj, Link))
    assert link_op.old.mtu == 1400 and link_op.obj.mtu == 1476


def test_changed_gre_endpoint_recreates_the_link_with_everything_on_it():
    cur = plan.desired(config(peer()), FixedEnv())
    want = plan.desired(config(peer(address="192.0.2.3")), FixedEnv())
    ops = plan.diff(cur, want)
    removed = [type(op.obj).__name__ for op in ops if op.action == "remove"]
    added = [type(op.obj).__name__ for op in ops if op.action == "add"]
    assert removed[-1] == "Link" and added[0] == "Link"
    assert {"Address", "Route"} <= set(removed) and {"Address", "Route"} <= set(added)
    assert [op.action for op in ops].index("add") > max(
        i for i, op in enumerate(ops) if op.action == "remove")


def test_inverse_of_each_op_undoes_it():
    a = Rule(4, 7201, 0x1, 0xFF, 7201)
    b = dataclasses.replace(a, table=7202)
    assert Op("add", a).inverse() == Op("remove", a)
    assert Op("remove", a).inverse() == Op("add", a)
    assert Op("change", b, a).inverse() == Op("change", a, b)


def test_removed_peer_removes_its_objects_and_nft_changes():
    two = plan.desired(config(peer(), peer("relay2", 2, address="192.0.2.3")), FixedEnv())
    one = plan.desired(config(peer()), FixedEnv())
    ops = plan.diff(two, one)
    removed = {plan.describe(op.obj) for op in ops if op.action == "remove"}
    assert any("ag-relay2" in d and d.startswith("link") for d in removed)
    assert any("table 7202" in d for d in removed) and any("lookup 7202" in d for d in removed)
    assert [op.action for op in ops if isinstance(op.obj, Nft)] == ["change"]
    assert not [op for op in ops if op.action == "add"]


def test_dry_run_lines_are_readable():
    want = plan.desired(config(peer()), FixedEnv())
    lines = [str(op) for op in plan.diff(State(), want)]
    assert lines[0] == ("+ add    link ag-relay1 gre mtu 1476 local 192.0.2.1 remote 192.0.2.2")
    assert "+ add    rule -4 priority 7201 fwmark 0x1/0xff lookup 7201" in lines
    assert "+ add    route -6 default dev ag-relay1 table 7201 proto 176" in lines
