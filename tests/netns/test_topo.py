"""The namespace topology builder on the host kernel: the standard lab's addressing and
routing, one-way blackholes, and that nothing outlives a topology, even a crashed one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from argoctl.lab import topo
from argoctl.lab.topo import Topology, TopologyError, list_namespaces, udp_delivers

MESH = list(topo.UNDERLAY)


def route_dev(host, dst: str) -> str:
    out = host.run(["ip", "route", "get", dst], check=True).stdout.split()
    return out[out.index("dev") + 1]


def test_lab_mesh_reaches_every_underlay_address_directly(lab):
    for x in MESH:
        for y in MESH:
            if x == y:
                continue
            for family in (4, 6):
                addr = lab[y].address(family)
                assert lab[x].ping(addr), f"{x} cannot reach {y} at {addr}"
            # straight over the x-y link, not through a third node
            assert route_dev(lab[x], lab[y].address(4)) == f"to-{y}"


def test_lab_client_and_origin_server_talk_over_the_direct_path(lab):
    client, edge = lab["client"], lab["edge"]
    for server in topo.ORIGIN_SERVER:
        assert client.ping(server), f"client cannot reach the origin server {server}"
        assert edge.ping(server)
    assert route_dev(edge, topo.ORIGIN_SERVER[0]) == "to-origin"
    assert route_dev(lab["origin"], "198.51.100.2") == "to-edge"
    for relay in ("relay1", "relay2"):
        assert lab[relay].ping(topo.ORIGIN_SERVER[0])
        assert lab[relay].ping("198.51.100.2"), f"{relay} cannot reach the client"


def test_lab_hosts_forward_and_use_underlay_source(lab):
    edge = lab["edge"]
    fwd = edge.run(["cat", "/proc/sys/net/ipv4/ip_forward",
                    "/proc/sys/net/ipv6/conf/all/forwarding"], check=True).stdout.split()
    assert fwd == ["1", "1"]
    got = edge.run(["ip", "route", "get", "192.0.2.4"], check=True).stdout.split()
    assert got[got.index("src") + 1] == "192.0.2.1"


def test_one_way_blackhole_drops_only_that_direction(pair):
    a, b = pair["a"], pair["b"]
    link = pair.link(a, b)
    assert udp_delivers(a, b, "192.0.2.2") and udp_delivers(b, a, "192.0.2.1")
    link.impair(blackhole=True, direction="a->b")
    assert not udp_delivers(a, b, "192.0.2.2", timeout=0.3)
    assert not udp_delivers(a, b, "2001:db8::2", timeout=0.3)
    assert udp_delivers(b, a, "192.0.2.1")
    assert udp_delivers(b, a, "2001:db8::1")
    # the reverse orientation names the same link
    pair.link(b, a).impair(blackhole=True, direction="a->b")
    assert not udp_delivers(b, a, "192.0.2.1", timeout=0.3)
    link.clear()
    assert udp_delivers(a, b, "192.0.2.2") and udp_delivers(b, a, "192.0.2.1")


def test_exception_inside_topology_removes_namespaces_and_processes():
    prefix = f"agtx{os.getpid()}"
    with pytest.raises(RuntimeError, match="boom"):
        with Topology(prefix) as t:
            h = t.add_host("h1", loopback="192.0.2.1")
            t.add_host("h2")
            t.add_link(h, t["h2"], subnet="192.0.2.64/30")
            t.start()
            proc = h.popen(["sleep", "600"])
            assert len([n for n in topo.list_namespaces() if n.startswith(prefix + "-")]) == 2
            raise RuntimeError("boom")
    assert not [n for n in topo.list_namespaces() if n.startswith(prefix + "-")]
    assert proc.poll() is not None


def test_failed_start_leaves_nothing():
    prefix = f"agtf{os.getpid()}"
    with Topology(prefix) as t:
        a, b = t.add_host("a"), t.add_host("b")
        t.add_link(a, b, subnet="192.0.2.64/30")
        t.add_route(a, "203.0.113.0/24", via="192.0.2.66", src="198.51.100.77")  # not local
        with pytest.raises(TopologyError, match="203.0.113.0/24"):
            t.start()
        assert not [n for n in topo.list_namespaces() if n.startswith(prefix + "-")]


def test_cleanup_stale_removes_a_killed_runs_namespaces_only():
    prefix, bystander = f"agts{os.getpid()}", f"agts{os.getpid()}x"
    script = textwrap.dedent(f"""
        import sys, time
        from argoctl.lab.topo import Topology
        t = Topology({prefix!r})
        a, b = t.add_host("a"), t.add_host("b")
        t.add_link(a, b, subnet="192.0.2.64/30")
        t.start()
        a.popen(["sleep", "600"])
        print("up", flush=True)
        time.sleep(600)
    """)
    crashed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    with Topology(bystander) as other:
        other.add_host("a")
        other.start()
        try:
            assert crashed.stdout.readline().strip() == "up"
            crashed.send_signal(signal.SIGKILL)     # no chance to clean up
            crashed.wait()
            left = [n for n in topo.list_namespaces() if n.startswith(prefix + "-")]
            assert sorted(left) == [f"{prefix}-a", f"{prefix}-b"]
            assert topo.cleanup_stale(prefix) == left
            assert not [n for n in topo.list_namespaces() if n.startswith(prefix + "-")]
            assert f"{bystander}-a" in topo.list_namespaces()
        finally:
            if crashed.poll() is None:
                crashed.kill()
            crashed.wait()
            topo.cleanup_stale(prefix)


def test_links_and_routes_added_after_start_apply_at_once(topo):
    a = topo.add_host("a", loopback="192.0.2.1")
    topo.start()
    b = topo.add_host("b", loopback="192.0.2.2")
    topo.add_link(a, b, subnet="192.0.2.64/31")
    topo.add_route(a, "192.0.2.2/32", via=b)
    topo.add_route(b, "192.0.2.1/32", via=a)
    assert a.ping("192.0.2.2")
    assert a.ifname(b) == "to-b" and topo.link(a, b).address(b) == "192.0.2.65"


def test_bad_descriptions_are_refused_before_touching_the_kernel(topo):
    a = topo.add_host("a")
    with pytest.raises(TopologyError, match="already exists"):
        topo.add_host("a")
    with pytest.raises(TopologyError, match="at most"):
        topo.add_host("averyveryverylongname")
    b = topo.add_host("b")
    with pytest.raises(TopologyError, match="fewer than two"):
        topo.add_link(a, b, subnet="192.0.2.1/32")
    link = topo.add_link(a, b, subnet="192.0.2.64/30")
    with pytest.raises(TopologyError, match="already linked"):
        topo.add_link(b, a, subnet="192.0.2.68/30")
    with pytest.raises(TopologyError, match="direction"):
        link.impair(delay_ms=5, direction="sideways")
    with pytest.raises(TopologyError, match="no link on the subnet"):
        topo.add_route(a, "203.0.113.0/24", via="198.51.100.1")
    assert not [n for n in list_namespaces() if n.startswith(topo.prefix + "-")]
