"""The watch's rule for which paths a drift concerns (watch.paths_of): every
object of a peer's path names that path; the drop rule, nft and global
forwarding name none (they break no one path)."""

from __future__ import annotations

from argoctl import plan, watch
from argoctl.estimator import State

from test_plan import FixedEnv, config, peer


def _lost(cfg, *objs):
    return watch.paths_of([plan.Op("add", o) for o in objs], cfg)


def test_each_object_of_a_path_names_it_and_shared_ones_name_none():
    cfg = config(peer(), peer("relay2", 2, address="192.0.2.3"))
    want = plan.desired(cfg, FixedEnv())
    by = {}
    for kind in plan.KINDS:
        for o in want.objects(kind):
            by.setdefault(kind.__name__, []).append(o)
    for link in by["Link"]:
        assert _lost(cfg, link) == {link.name[len("ag-"):]}
    for r in by["Route"]:           # the tunnel route and the blackhole under it
        assert _lost(cfg, r) == {"relay1" if r.table == 7201 else "relay2"}, r
    for r in by["Rule"]:
        expect = {7200: {"direct"}, 7201: {"relay1"}, 7202: {"relay2"}, 7455: set()}
        assert _lost(cfg, r) == expect[r.priority], r
    for a in by["Address"]:
        assert _lost(cfg, a) == {a.dev[len("ag-"):]}
    assert _lost(cfg, *by["Nft"]) == set()
    assert _lost(cfg, *[s for s in by["Sysctl"] if s.path in plan.GLOBAL_SYSCTLS]) == set()


def test_a_lost_path_is_down_at_once_and_recovers_only_by_replies():
    from argoctl.config import Policy
    from argoctl.engine import Engine
    pol = Policy(probe_interval_ms=100, detect_multiplier=3, recover_probes=3)
    for native in (False, True):       # the compiled path state does the same
        e = Engine(pol, [("origin", ("direct", "relay1"))], clock=lambda: 0.0, native=native)
        est = e.path("origin", "relay1")
        for i in range(5):
            for p in ("direct", "relay1"):
                e.path("origin", p).on_reply(i, i * 0.1, 0.01, i * 0.1 + 0.01)
        assert est.state is State.UP
        assert e.on_path_lost("relay1", 0.6) == ["origin"]
        assert est.state is State.DOWN
        # direct answered in the same instant: rule 6 would call that a stall, but a
        # lost object is the path's own failure, charged (flap penalty, hold-down)
        e.decide_one("origin", 0.6)
        assert est.counts["excused"] == 0 and est.counts["downs"] == 1, native
        for i in range(5, 7):
            est.on_reply(i, i * 0.1, 0.01, i * 0.1 + 0.01)
        assert est.state is State.DOWN, native     # 2 replies: not yet
        est.on_reply(7, 0.7, 0.01, 0.71)
        assert est.state is State.UP, native


def _event(cls, kind, attrs, **fields):
    m = cls()
    m["header"]["type"] = kind
    for k, v in fields.items():
        m[k] = v
    m["attrs"] = attrs
    m.encode()
    return bytes(m.data[:m["header"]["length"]])


def test_deletion_events_name_their_path_at_once():
    """watch.deleted_paths: what marks a path down from the rtnetlink event
    itself, before the check (the check alone took ~1-2 s in the TCG guest)."""
    from pyroute2.netlink.rtnl.fibmsg import fibmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg
    cfg = config(peer(), peer("relay2", 2, address="192.0.2.3"))
    link = _event(ifinfmsg, watch.RTM_DELLINK, [("IFLA_IFNAME", "ag-relay2")])
    other_link = _event(ifinfmsg, watch.RTM_DELLINK, [("IFLA_IFNAME", "eth0")])
    route = _event(rtmsg, watch.RTM_DELROUTE, [("RTA_TABLE", 7201)], family=2, table=252,
                   proto=176, type=1)
    drop = _event(rtmsg, watch.RTM_DELROUTE, [("RTA_TABLE", 7201)], family=2, table=252,
                  proto=176, type=6)
    users = _event(rtmsg, watch.RTM_DELROUTE, [("RTA_TABLE", 7201)], family=2, table=252,
                   proto=4, type=1)
    rule = _event(fibmsg, watch.RTM_DELRULE, [("FRA_PRIORITY", 7200)], family=2)
    assert watch.deleted_paths(link, cfg) == {"relay2"}
    assert watch.deleted_paths(route, cfg) == {"relay1"}
    assert watch.deleted_paths(rule, cfg) == {"direct"}
    assert watch.deleted_paths(link + route + rule, cfg) == {"relay1", "relay2", "direct"}
    # not a path's object: another device, the drop under a tunnel route, a user's route
    assert watch.deleted_paths(other_link + drop + users, cfg) == set()
    assert watch.deleted_paths(b"\x00garbage", cfg) == set()
