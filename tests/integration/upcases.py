"""`argoctl up/down` on the standard lab, for one tunnel kind per importing module.

A module sets a `kind` fixture ("gre" or "wireguard") and star-imports this file.
One topology per module; tests run in file order and build on each other (up on
edge and relay1 first, down and failure injection last), to stay fast under TCG.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import time
import traceback

import pytest

from argoctl import apply, home, netlink, plan
from argoctl.config import Routing

from upkit import (MB, ORIGIN6, PORT, TUNNEL_ADDR, Server, counters, delta, snapshot, transfer,
                   write_configs)

MARK = Routing().mark(1)          # the relay1 path on edge, the edge path on relay1
PORT6 = PORT + 1
SMALL = 20 * 1024                 # < 20 packets: "unchanged" allowing for stray ND/keepalive


def _user_objects(host):
    """Objects a user made before argoctl: one with our link prefix but no alias, a rule in
    our priority range (on mark bits outside our mask: one on them is refused), a route in one of our tables (not our protocol), an nft table."""
    script = """
ip link add ag-mine type veth peer name usr-peer
ip addr add 192.0.2.250/32 dev usr-peer
ip link set usr-peer up
ip route add 203.0.113.128/25 dev usr-peer
ip route add 203.0.113.128/25 dev usr-peer table 7203 proto static
ip rule add priority 7210 fwmark 0x500/0xff00 lookup 100
ip -6 rule add priority 7211 from 2001:db8:c::/64 lookup 7203
nft add table inet usertable
nft add chain inet usertable c '{ type filter hook input priority 0; policy accept; }'
"""
    host.run(["sh", "-ec", script], check=True)


@pytest.fixture(scope="module")
def env(kind, lab_module, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"up-{kind}")
    topo = lab_module
    edge, relay = topo["edge"], topo["relay1"]
    _user_objects(edge)
    e = {"topo": topo, "edge": edge, "relay": relay, "origin": topo["origin"],
         "client": topo["client"], "run_dir": str(tmp / "run"),
         "configs": write_configs(tmp, kind), "tmp": tmp}
    e["pre"] = {"edge": snapshot(edge), "relay": snapshot(relay)}
    e["server"] = Server(topo["origin"])
    yield e
    e["server"].close()


def up(env, who, **kw):
    # The kernel-object stages (what these cases are about); the datapath's stages
    # cost a bcc compile each time, and are in the kill test below and test_up_gre.py.
    kw.setdefault("stages", ("links", "nft"))
    return apply.up(env["configs"]["edge" if who == "edge" else "relay1"], ns=env[who].netns,
                    run_dir=env["run_dir"], **kw)


def down(env, who):
    return apply.down(ns=env[who].netns, run_dir=env["run_dir"])


def owned(env, who):
    host = env[who]
    with netlink.netns(host.netns):
        from pyroute2 import IPRoute, WireGuard
        from argoctl import nft
        with IPRoute() as ipr:
            wg = []
            state = netlink.read_owned(ipr, Routing(), wg=lambda: wg.append(WireGuard()) or wg[-1],
                                       nft=nft.Client())
            for w in wg:
                w.close()
    return state


def test_up_builds_the_planned_state(env, kind):
    ctx = up(env, "edge")
    assert ctx.result.writes > 0
    assert up(env, "relay").result.writes > 0
    st = owned(env, "edge")
    (link,) = st.links
    assert link.name == "ag-relay1"
    assert link.kind == kind
    expected_mtu = 1500 - (24 if kind == "gre" else 60)
    assert link.mtu == expected_mtu
    assert [(a.local, a.peer) for a in st.addresses] == [(TUNNEL_ADDR["edge"],
                                                           TUNNEL_ADDR["relay1"])]
    # the tunnel's route, and under it the drop: marked traffic never falls to main
    assert {(r.family, r.table, r.dev, r.type) for r in st.routes} == {
        (4, 7201, "ag-relay1", "unicast"), (6, 7201, "ag-relay1", "unicast"),
        (4, 7201, "", "blackhole"), (6, 7201, "", "blackhole")}
    assert {(r.family, r.priority, r.mark, r.table, r.action) for r in st.rules} == {
        (4, 7200, 0xFF, 254, "table"), (6, 7200, 0xFF, 254, "table"),
        (4, 7201, MARK, 7201, "table"), (6, 7201, MARK, 7201, "table"),
        (4, 7455, 0, 0, "blackhole"), (6, 7455, 0, 0, "blackhole")}
    assert len(st.nft) == 1
    # The tunnel itself works: ping the far end's tunnel address.
    assert env["edge"].ping(TUNNEL_ADDR["relay1"], count=3, timeout=3)


def test_marked_connection_goes_through_the_relay_and_back(env):
    edge, relay, origin = env["edge"], env["relay"], env["origin"]
    points = {"edge_tun": (edge, "ag-relay1"), "relay_tun": (relay, "ag-edge"),
              "relay_to_origin": (relay, relay.ifname(origin)),
              "edge_to_origin": (edge, edge.ifname(origin))}
    before = {k: counters(*v) for k, v in points.items()}
    n = len(env["server"].seen)
    got = transfer(edge, mark=MARK, upload=MB, download=MB)
    d = {k: delta(before[k], counters(*v)) for k, v in points.items()}
    assert got == MB
    # 1 MB each way: out and back through the tunnel on both ends and the relay's link
    # to the origin (bytes, not packets: GSO/GRO count a burst as one packet).
    for k in ("edge_tun", "relay_tun", "relay_to_origin"):
        assert d[k]["tx_bytes"] > MB and d[k]["rx_bytes"] > MB, (k, d[k])
    # ... and not over edge's direct link to the origin.
    assert d["edge_to_origin"]["tx_bytes"] < SMALL and d["edge_to_origin"]["rx_bytes"] < SMALL
    # The origin saw the relay (masqueraded), not the edge.
    peer_ip, nbytes = env["server"].seen[n]
    assert peer_ip == env["topo"].link(relay, origin).address(relay)
    assert nbytes == MB


def test_marked_ipv6_connection_goes_through_the_relay_and_back(env):
    """The same over IPv6 (the tunnels' underlay stays IPv4): the v6 fwmark rule and
    table, v6 forwarding, masquerade and the symmetric return on the relay."""
    edge, relay, origin = env["edge"], env["relay"], env["origin"]
    server = Server(origin, port=PORT6, family=socket.AF_INET6)
    try:
        before = {k: counters(*v) for k, v in (("edge_tun", (edge, "ag-relay1")),
                                               ("edge_to_origin", (edge, edge.ifname(origin))))}
        got = transfer(edge, dst=ORIGIN6, port=PORT6, mark=MARK, upload=MB // 4,
                       download=MB // 4)
        d = {k: delta(before[k], counters(*v)) for k, v in (
            ("edge_tun", (edge, "ag-relay1")), ("edge_to_origin", (edge, edge.ifname(origin))))}
        assert got == MB // 4
        assert d["edge_tun"]["tx_bytes"] > MB // 4 and d["edge_tun"]["rx_bytes"] > MB // 4, d
        assert d["edge_to_origin"]["tx_bytes"] < SMALL and d["edge_to_origin"]["rx_bytes"] < SMALL
        # origin saw the relay's IPv6 address on their link (masqueraded), not the edge's
        assert server.seen == [(env["topo"].link(relay, origin).address(relay, 6), MB // 4)]
    finally:
        server.close()


def test_unmarked_connection_goes_direct(env):
    edge, origin = env["edge"], env["origin"]
    tun0 = counters(edge, "ag-relay1")
    direct0 = counters(edge, edge.ifname(origin))
    n = len(env["server"].seen)
    assert transfer(edge, upload=MB, download=MB) == MB
    tun = delta(tun0, counters(edge, "ag-relay1"))
    direct = delta(direct0, counters(edge, edge.ifname(origin)))
    assert tun["tx_bytes"] < SMALL and tun["rx_bytes"] < SMALL, tun
    assert direct["tx_bytes"] > MB and direct["rx_bytes"] > MB, direct
    assert env["server"].seen[n][0] == edge.address()


def _mark_client_traffic(edge, client):
    """Test-only: edge marks what arrives from the client with the relay path's mark
    (the eBPF datapath's job in production)."""
    ifname = edge.ifname(client)
    edge.run(["nft", "-f", "-"], check=True, input=(
        "table inet agtest {\n chain pre {\n  type filter hook prerouting priority mangle - 1;\n"
        f'  iifname "{ifname}" meta mark set {MARK:#x}\n }}\n}}\n'))


def test_forwarded_client_bulk_goes_through_the_relay_without_stall(env):
    """Forwarded traffic, the product's main case: 50 MB from the client behind edge,
    marked on edge, relayed, masqueraded, and the replies (ACKs) return through the
    tunnel even though relay1 routes the client's subnet directly to edge."""
    edge, relay, client, origin = env["edge"], env["relay"], env["client"], env["origin"]
    _mark_client_traffic(edge, client)
    try:
        e0, r0 = counters(edge, "ag-relay1"), counters(relay, "ag-edge")
        direct0 = counters(edge, edge.ifname(origin))
        n = len(env["server"].seen)
        t0 = time.monotonic()
        got = transfer(client, upload=50 * MB, download=MB, timeout=60)
        elapsed = time.monotonic() - t0
        e, r = delta(e0, counters(edge, "ag-relay1")), delta(r0, counters(relay, "ag-edge"))
        direct = delta(direct0, counters(edge, edge.ifname(origin)))
    finally:
        edge.run(["nft", "delete", "table", "inet", "agtest"], check=True)
    assert got == MB
    assert env["server"].seen[n] == (env["topo"].link(relay, origin).address(relay), 50 * MB)
    # 50 MB out and the 1 MB answer back, both through the tunnel at both ends.
    assert e["tx_bytes"] > 50 * MB and e["rx_bytes"] > MB, e
    assert r["rx_bytes"] > 50 * MB and r["tx_bytes"] > MB, r
    assert direct["tx_bytes"] < SMALL, direct
    print(f"client bulk 50 MB via {env['configs']['edge'].peers[0].tunnel}: {elapsed:.1f} s")


def test_bulk_download_to_marked_edge_socket(env):
    edge = env["edge"]
    t0 = counters(edge, "ag-relay1")
    assert transfer(edge, mark=MARK, upload=1024, download=50 * MB, timeout=60) == 50 * MB
    assert delta(t0, counters(edge, "ag-relay1"))["rx_bytes"] > 50 * MB


def test_second_up_makes_zero_writes(env):
    for who in ("edge", "relay"):
        ctx = up(env, who)
        assert ctx.ops == []
        assert ctx.result.writes == 0


def test_drift_is_restored_exactly(env):
    edge = env["edge"]
    good = snapshot(edge)
    edge.run(["sh", "-ec", f"""
ip rule del priority 7201 fwmark {MARK:#x}/0xff lookup 7201
ip -6 route del default dev ag-relay1 table 7201
ip addr add 198.51.100.211 peer {TUNNEL_ADDR['relay1']} dev ag-relay1
ip addr del {TUNNEL_ADDR['edge']} peer {TUNNEL_ADDR['relay1']} dev ag-relay1
"""], check=True)
    # (the new address goes on first: removing a device's last IPv4 address makes the
    # kernel flush its IPv4 routes; up replaces addresses make-before-break for that reason)
    ctx = up(env, "edge")
    got = sorted((op.action, plan.describe(op.obj)) for op in ctx.ops)
    assert got == sorted([  # exactly the drift, nothing else
        ("remove", f"address 198.51.100.211 peer {TUNNEL_ADDR['relay1']} dev ag-relay1"),
        ("add", f"address {TUNNEL_ADDR['edge']} peer {TUNNEL_ADDR['relay1']} dev ag-relay1"),
        ("add", "route -6 default dev ag-relay1 table 7201 proto 176"),
        ("add", f"rule -4 priority 7201 fwmark {MARK:#x}/0xff lookup 7201"),
    ]), got
    assert ctx.result.writes == 4
    assert snapshot(edge) == good
    assert up(env, "edge").result.writes == 0
    assert transfer(edge, mark=MARK) == 64 * 1024


def test_user_objects_are_untouched_by_up(env):
    now = snapshot(env["edge"])
    pre = env["pre"]["edge"]
    names_now = {l["ifname"] for l in now["links"]}
    assert {"ag-mine", "usr-peer"} <= names_now
    for key in ("rules4", "rules6", "routes4", "routes6"):
        for item in pre[key]:
            assert item in now[key], (key, item)
    assert "table inet usertable" in now["nft"]


def test_down_restores_the_pre_up_snapshot(env):
    for who in ("edge", "relay"):
        ctx = down(env, who)
        assert ctx.result.writes > 0
        assert snapshot(env[who]) == env["pre"][who]
        assert down(env, who).result.writes == 0


def test_failure_at_every_step_restores_the_snapshot(env):
    pre = env["pre"]["edge"]
    n = len(up(env, "edge", dry_run=True).ops)
    assert n >= 10
    for k in range(n + 1):
        with pytest.raises(netlink.InjectedFailure):
            up(env, "edge", fail_at=k)
        assert snapshot(env["edge"]) == pre, f"fail_at={k}"


def test_link_name_taken_by_the_user_fails_cleanly(env):
    """A user's link with our name but without our alias is not ours: up fails with a
    clear error and leaves nothing behind."""
    edge = env["edge"]
    edge.run(["ip", "link", "add", "ag-relay1", "type", "veth", "peer", "name", "usr-x"],
             check=True)
    try:
        pre = snapshot(edge)
        with pytest.raises(netlink.ApplyError, match="ag-relay1.*File exists"):
            up(env, "edge")
        assert snapshot(edge) == pre
        # and the intent journal does not call it an interrupted creation of ours
        # (the next up or down would delete the user's device)
        from argoctl import intent
        state = home.locate(edge.netns, env["run_dir"]).state_dir
        assert "ag-relay1" not in intent.Intents(state).links()
    finally:
        edge.run(["ip", "link", "del", "ag-relay1"], check=True)


def test_no_underlay_route_is_a_clear_error(env):
    edge = env["edge"]
    cfg = env["configs"]["edge"]
    import dataclasses
    import ipaddress
    peer = dataclasses.replace(cfg.peers[0], address=ipaddress.ip_address("198.51.100.250"))
    bad = dataclasses.replace(cfg, peers=(peer,))
    with pytest.raises(plan.PlanError, match="no underlay route to peer address 198.51.100.250"):
        apply.up(bad, ns=edge.netns, run_dir=env["run_dir"])
    assert snapshot(edge) == env["pre"]["edge"]


def _full(host) -> dict:
    """snapshot() plus every device's tc qdiscs (clsact among them) and ingress
    filters, and the pins. (Two shells: processes cost seconds each under TCG.)"""
    snap = snapshot(host)
    script = ("for d in $(ip -o link show | cut -d: -f2 | cut -d@ -f1); do "
              "echo $d; tc qdisc show dev $d; tc filter show dev $d ingress; done")
    snap["tc"] = host.run(["sh", "-ec", script], check=True).stdout
    pins = home.pin_dir(host.netns)
    snap["pins"] = sorted(os.listdir(pins)) if os.path.isdir(pins) else None
    return snap


CHILD_LIMIT = 600    # s: a child still running then is hung; its stacks go to the log


def _killed_up(env, kill_at) -> bool:
    """`up` on edge with every stage, in a forked child (no interpreter start: seconds
    under TCG) that SIGKILLs itself at step `kill_at` (an index, or the first step
    whose description starts with it). True if it was killed, False if it finished."""
    cfg = env["configs"]["edge"]
    pid = os.fork()
    if pid == 0:                                      # the child: never returns
        code = 0
        try:
            faulthandler.dump_traceback_later(CHILD_LIMIT, exit=True)   # (exit code 1)
            apply.up(cfg, ns=env["edge"].netns, run_dir=env["run_dir"], cgroup=None,
                     kill_at=kill_at)
        except BaseException:
            traceback.print_exc()
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, f"up failed or hung (kill_at={kill_at}): see stderr"
    return False


def test_up_killed_at_each_step_leaves_nothing_down_cannot_remove(env, kind):
    """SIGKILL at every step of the kernel-object stages -- for WireGuard that includes
    the instant between creating the device and giving it our alias -- and before the
    datapath's load, then `down`: the namespace is exactly as before, clsact qdiscs
    and pins included. Over GRE only, also at the first clsact qdisc, the first filter
    (both on the tunnel device) and the first map write: each of those costs a bcc
    compile (a minute under TCG on a loaded machine), and what they do does not depend
    on the tunnel's kind; every datapath step is killed on the host kernel too
    (tests/netns/test_lifecycle_stages.py)."""
    edge = env["edge"]
    pre = _full(edge)
    assert pre["pins"] is None
    with pytest.raises(netlink.InjectedFailure) as e:   # the kernel-object steps, by name
        up(env, "edge", fail_at=10 ** 6)
    steps = e.value.steps
    # (consecutive address, route and rule requests go as one batch: one step)
    assert len(steps) >= 5 and _full(edge) == pre
    assert steps[0].startswith("+ add    link ag-relay1") and "alias ag-relay1" in steps
    assert any(s.startswith("+ add    route") or " more)" in s for s in steps)
    if kind == "wireguard":   # created, not yet aliased: only the intent journal knows it
        assert "configure ag-relay1" in steps
    points = list(range(len(steps))) + ["load the datapath"]
    if kind == "gre":
        points += ["clsact ag-relay1", "filter passive_l3 ag-relay1", "first map contents"]
    left, took = 0, []
    for k in points:
        t0 = time.monotonic()
        assert _killed_up(env, k), f"kill_at={k}: up finished first"
        after = _full(edge)
        assert after != pre or k == 0, f"kill_at={k}: the step's write did not happen"
        if k == "clsact ag-relay1":        # compiled and pinned, nothing attached yet
            assert after["pins"] and "clsact" not in after["tc"]
        elif k == "filter passive_l3 ag-relay1":     # our qdisc, not yet our filter
            assert "qdisc clsact" in after["tc"] and "argoctl-" not in after["tc"]
        elif k == "first map contents":
            assert "argoctl-passive_l3" in after["tc"]
        left += after != pre
        down(env, "edge")
        assert _full(edge) == pre, f"kill_at={k} ({steps[k] if isinstance(k, int) else k})"
        took.append(f"{k}:{time.monotonic() - t0:.0f}s")
    print(f"kill test ({kind}): {len(points)} kills, each then down: {' '.join(took)}")
    assert left == len(points) - 1      # (killed before its first write: nothing to undo)
