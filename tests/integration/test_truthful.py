"""The daemon's truth at run time (issue 15), with GRE tunnels in the standard lab.

1. It watches what it owns: a tunnel device, its route or its rule deleted behind
   the daemon's back while a 1,000 pps stream uses that path. The path goes down
   and the stream moves to the other relay; no packet of the client leaves through
   the main table (an nft counter on edge's direct link, before netem, counts the
   client's datagrams there: it must stay 0); the object is recreated and the
   path is chosen again after recovery.
2. (wip/test_truthful_lan_drop.py, not yet seen to pass in the VM, so not in
   CI: a relay whose reverse-path filter drops the client LAN's packets is left
   by UDP, ICMP and new TCP within BOUND_S and not returned to.)

One lab, one daemon (in-process, in edge's namespace) for the module. edge ->
origin is blackholed throughout, so the relays are the only working paths and
any datagram of the client on edge's direct link is a leak, not a choice.
"""

from __future__ import annotations

import socket
import time

import pytest

from argoctl.estimator import State
from argoctl.lab import loop as looplab

POLICY = {"probe_interval_ms": 100, "detect_multiplier": 3, "probe_timeout_ms": 300,
          "hold_down_s": 2.0, "recover_probes": 3, "metrics_listen": ""}
DETECT_S = 0.3                 # detect_multiplier x probe interval
BOUND_S = 3.0                  # asserted: DETECT_S plus a wide margin for the TCG guest
RELAYS = ("relay1", "relay2")
CLIENT = "198.51.100.2"
NFT_TABLE = "truthful_leak"


@pytest.fixture(scope="module")
def tlab(lab_module, tmp_path_factory):
    t = lab_module
    t.link("edge", "origin").impair(blackhole=True, direction="a->b")
    lab = looplab.LoopLab(t, str(tmp_path_factory.mktemp("truthful")), POLICY, tunnels="gre")
    # The client's datagrams leaving edge by its direct link: postrouting sees
    # them before netem drops them.
    t["edge"].run(["nft", "add table ip " + NFT_TABLE], check=True)
    t["edge"].run(["nft", f"add chain ip {NFT_TABLE} post {{ type filter hook postrouting "
                          "priority 0 ; }"], check=True)
    t["edge"].run(["nft", f"add rule ip {NFT_TABLE} post oifname to-origin ip saddr {CLIENT} "
                          "counter"], check=True)
    try:
        lab.start()
        lab.tcp = looplab.TcpServer(t["origin"])
        yield lab
    finally:
        if getattr(lab, "tcp", None):
            lab.tcp.stop()
        lab.stop()


def leaked(lab) -> int:
    out = lab.topo["edge"].run(["nft", "list", "table", "ip", NFT_TABLE], check=True).stdout
    for line in out.splitlines():
        if "counter packets" in line:
            return int(line.split("counter packets")[1].split()[0])
    raise AssertionError(out)


def prefer(lab, relay: str) -> None:
    """relay1 is the faster relay; to prefer relay2, slow relay1's link down."""
    t = lab.topo
    t.link("edge", "relay1").impair(delay_ms=10 if relay == "relay1" else 60, direction="both")
    t.link("edge", "relay2").impair(delay_ms=30, direction="both")


def _state(d, path):
    return d.engine.path("origin", path).state


def _settle_on(lab, relay: str) -> None:
    d = lab.daemon
    prefer(lab, relay)
    ok = lab.wait_for(lambda: lab.choice() == relay and all(
        _state(d, r) is State.UP for r in RELAYS), 90, 0.1)
    assert ok, (lab.choice(), {r: _state(d, r) for r in RELAYS}, d.engine.last("origin").reason)


def _window(lab, stream, seconds=1.0):
    t1 = time.monotonic()
    time.sleep(seconds)
    got = lab.sink.by_link(since=t1)
    got["sent"] = sum(1 for x in list(stream.sent) if t1 <= x < t1 + seconds)
    return got


def _relay_of_peer(lab, peer: str) -> str:
    t = lab.topo
    for r in RELAYS:
        if peer == t.link(r, "origin").address(t[r]):
            return r
    return peer


def _connect_via(lab) -> str:
    n = len(lab.tcp.peers)
    assert looplab.tcp_connect(lab.topo["client"], timeout=15), "connection failed"
    assert lab.wait_for(lambda: len(lab.tcp.peers) > n, 10)
    return _relay_of_peer(lab, lab.tcp.peers[n])


def _delete(lab, what: str, relay: str) -> None:
    cfg = lab.configs["edge"]
    pid, r = cfg.path_id(relay), cfg.routing
    with lab.topo["edge"].ipr() as ipr:
        dev = ipr.link_lookup(ifname=f"ag-{relay}")[0]
        if what == "link":
            ipr.link("del", index=dev)
        elif what == "route":
            ipr.route("del", family=socket.AF_INET, table=r.table(pid), dst_len=0, oif=dev,
                      proto=176)
        else:
            ipr.rule("del", family=socket.AF_INET, priority=r.priority(pid), fwmark=r.mark(pid),
                     fwmask=r.fwmark_mask, table=r.table(pid))


def _present(lab, what: str, relay: str) -> bool:
    cfg = lab.configs["edge"]
    pid, r = cfg.path_id(relay), cfg.routing
    with lab.topo["edge"].ipr() as ipr:
        if not ipr.link_lookup(ifname=f"ag-{relay}"):
            return False
        if what == "route":
            return any(m["type"] == 1 for m in ipr.get_routes(family=socket.AF_INET,
                                                                table=r.table(pid)))
        if what == "rule":
            return any(m.get_attr("FRA_PRIORITY") == r.priority(pid)
                       for m in ipr.get_rules(family=socket.AF_INET))
        return True


# Each case leaves a relay once; relay1 twice, far enough apart (and once on
# relay2 between) that flap damping (2 failures within ~a minute) stays below
# suppression, so "chosen again after recovery" is about the repair, not damping.
@pytest.mark.parametrize("what,relay", [("link", "relay1"), ("route", "relay2"),
                                        ("rule", "relay1")])
def test_a_deleted_tunnel_route_or_rule_moves_traffic_and_is_repaired(tlab, what, relay):
    lab, d = tlab, tlab.daemon
    other = next(r for r in RELAYS if r != relay)
    _settle_on(lab, relay)
    stream = looplab.Stream(lab.topo["client"], pps=1000)
    try:
        assert lab.wait_for(lambda: lab.sink.by_link().get(f"to-{relay}", 0) > 50, 20)
        repairs, leak0 = d.watch.repairs, leaked(lab)
        t0 = time.monotonic()
        _delete(lab, what, relay)
        assert lab.wait_for(lambda: _state(d, relay) is State.DOWN, 10)
        t_down = time.monotonic() - t0
        assert lab.wait_for(lambda: lab.choice() == other and
                            d.written["origin"][relay] == (0, False), 10)
        t_moved = time.monotonic() - t0
        print(f"\n{what} of {relay} deleted: down after {t_down:.3f} s, traffic moved after "
              f"{t_moved:.3f} s (detection time {DETECT_S} s)")
        assert t_down <= BOUND_S and t_moved <= BOUND_S, (t_down, t_moved)
        got = _window(lab, stream)
        assert got.get(f"to-{other}", 0) >= 0.8 * got["sent"] > 20, got
        assert not got.get(f"to-{relay}"), got
        # recreated by the daemon, trusted again only after recovery, then chosen again
        assert lab.wait_for(lambda: d.watch.repairs > repairs and _present(lab, what, relay), 30)
        assert lab.wait_for(lambda: _state(d, relay) is State.UP, 30)
        recovered = d.engine.path("origin", relay).snapshot().recovered_at
        assert lab.wait_for(lambda: lab.choice() == relay, 60), d.engine.last("origin").reason
        # the switch back (not a decision that kept it before the move)
        back = next(r for r in d.history if r.at >= t0 and r.choice == relay
                    and r.previous != relay)
        assert back.at >= recovered, (back.at, recovered)     # not before it recovered
        assert _connect_via(lab) == relay
        # the whole time, not one datagram of the client left through main
        assert leaked(lab) == leak0
    finally:
        stream.stop()
