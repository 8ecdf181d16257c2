"""The eBPF datapath on the standard lab under the distribution kernel.

edge steers what arrives from the client (tc ingress of its client-facing
interface) and what its own processes connect to (cgroup hooks); `argoctl up`
(apply.up) built the GRE tunnel to relay1, the fwmark rules and tables. Moving
traffic between direct and the relay is a map write only: routes never change."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
import socket
import subprocess
import sys
import threading
import time

import pytest

from argoctl import apply, datapath, maps
from upkit import MB, Server, counters, delta, transfer, write_configs

DEST_ID = 1          # "origin", the only destination of the lab config
RELAY_ID = 1         # relay1's path id
UDP_PORT = 6001
SO_RCVBUFFORCE = 33


def pathset(cfg, direct: int, relay: int) -> list[maps.Path]:
    return [maps.Path(path_id=0, mark=cfg.routing.mark(0), weight=direct),
            maps.Path(path_id=RELAY_ID, mark=cfg.routing.mark(RELAY_ID), weight=relay)]


def kernel_routing(host) -> str:
    """Routes and rules of every table: what must not change when steering moves."""
    return host.run(["sh", "-c", "ip route show table all; ip -6 route show table all; "
                     "ip rule; ip -6 rule"], check=True).stdout


@pytest.fixture(scope="module")
def env(lab_module, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("steer")
    topo = lab_module
    edge, relay, client, origin = (topo[n] for n in ("edge", "relay1", "client", "origin"))
    configs = write_configs(tmp, "gre")
    node = dataclasses.replace(configs["edge"].node, steer_interfaces=(edge.ifname(client),))
    cfg = dataclasses.replace(configs["edge"], node=node)
    run_dir = str(tmp / "run")
    pin_dir = f"/sys/fs/bpf/argoctl-t{os.getpid()}"
    cgroup = os.path.join(datapath.cgroup2_root(), f"argoctl-t{os.getpid()}")
    os.makedirs(cgroup, exist_ok=True)
    # tunnels and rules; the datapath is this module's own (attach/program/detach below)
    apply.up(cfg, ns=edge.netns, run_dir=run_dir, stages=("links", "nft"))
    apply.up(configs["relay1"], ns=relay.netns, run_dir=run_dir + "-relay", stages=("links", "nft"))
    server = Server(origin)
    try:
        res = datapath.attach(cfg, pin_dir=pin_dir, netns=edge.netns, cgroup=cgroup)
        datapath.program(cfg, pin_dir=pin_dir)
        yield {"topo": topo, "edge": edge, "relay": relay, "client": client, "origin": origin,
               "cfg": cfg, "config_path": str(tmp / "edge.toml"), "pin_dir": pin_dir,
               "cgroup": cgroup, "server": server, "attach": res}
    finally:
        server.close()
        datapath.detach(pin_dir=pin_dir, netns=edge.netns, cgroup=cgroup)
        apply.down(ns=edge.netns, run_dir=run_dir)
        apply.down(ns=relay.netns, run_dir=run_dir + "-relay")
        os.rmdir(cgroup)


def seen(server, i: int, timeout: float = 10.0):
    """The server's record of connection i (it lands just after the client is done)."""
    deadline = time.monotonic() + timeout
    while len(server.seen) <= i and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.seen[i]


def steer(env, direct: int, relay: int) -> None:
    with maps.Maps(env["pin_dir"]) as m:
        m.set_pathset(DEST_ID, pathset(env["cfg"], direct, relay))


def test_attach_hooks_everything_and_status_shows_it(env):
    res = env["attach"]
    assert res.compiled and res.steered == [env["edge"].ifname(env["client"])]
    assert "ag-relay1" in res.passive
    st = datapath.status(env["pin_dir"], netns=env["edge"].netns, cgroup=env["cgroup"])
    assert st["loaded"] and st["cgroup_hooks"]
    assert set(st["filters"]) == set(res.steered) | set(res.passive)
    assert st["destinations"][DEST_ID]["prefixes"] == ["203.0.113.0/24"]
    # A second attach adopts: nothing compiled, nothing re-attached.
    again = datapath.attach(env["cfg"], pin_dir=env["pin_dir"], netns=env["edge"].netns,
                            cgroup=env["cgroup"])
    assert not again.compiled and again.newly_attached == []


def test_forwarded_traffic_moves_to_the_relay_when_only_the_map_changes(env):
    edge, relay, client = env["edge"], env["relay"], env["client"]
    server, topo = env["server"], env["topo"]
    relay_addr = topo.link(relay, env["origin"]).address(relay)
    routing0 = kernel_routing(edge)

    steer(env, direct=1, relay=0)
    tun0 = counters(edge, "ag-relay1")
    n = len(server.seen)
    assert transfer(client, upload=MB, download=64 * 1024) == 64 * 1024
    assert seen(server, n) == ("198.51.100.2", MB)             # straight from the client
    assert delta(tun0, counters(edge, "ag-relay1"))["tx_bytes"] < 100_000

    steer(env, direct=0, relay=1)
    with maps.Maps(env["pin_dir"]) as m:
        p0 = m.path_stats(RELAY_ID)
    tun0 = counters(edge, "ag-relay1")
    assert transfer(client, upload=MB, download=64 * 1024) == 64 * 1024
    assert seen(server, n + 1) == (relay_addr, MB)              # through relay1, masqueraded
    assert delta(tun0, counters(edge, "ag-relay1"))["tx_bytes"] > MB
    with maps.Maps(env["pin_dir"]) as m:
        p1 = m.path_stats(RELAY_ID)
    assert p1.packets - p0.packets > 500 and p1.bytes - p0.bytes > MB
    # Passive signal: the connection's SYN was counted and answered on the relay path.
    assert p1.syns - p0.syns == 1 and p1.synacks - p0.synacks == 1 and p1.rtt_count > p0.rtt_count

    assert kernel_routing(edge) == routing0


def test_local_process_on_the_edge_is_steered_the_same_way(env):
    edge, server = env["edge"], env["server"]
    relay_addr = env["topo"].link(env["relay"], env["origin"]).address(env["relay"])
    root_procs = os.path.join(datapath.cgroup2_root(), "cgroup.procs")
    with maps.Maps(env["pin_dir"]) as m:
        relay0, direct0 = m.path_stats(RELAY_ID), m.path_stats(0)
    with open(os.path.join(env["cgroup"], "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))     # this process is now "a local proxy" under the hooks
    try:
        n = len(server.seen)
        steer(env, direct=0, relay=1)
        assert transfer(edge, upload=64 * 1024, download=1024) == 1024
        steer(env, direct=1, relay=0)
        assert transfer(edge, upload=64 * 1024, download=1024) == 1024
        # A socket marked by its owner (a probe for the relay path) is left alone.
        assert transfer(edge, mark=env["cfg"].routing.mark(RELAY_ID), upload=1024,
                        download=1024) == 1024
    finally:
        with open(root_procs, "w") as f:
            f.write(str(os.getpid()))
    assert [seen(server, i)[0] for i in range(n, n + 3)] == [relay_addr, edge.address(), relay_addr]
    with maps.Maps(env["pin_dir"]) as m:
        relay, direct = m.path_stats(RELAY_ID), m.path_stats(0)
    assert relay.sockets - relay0.sockets == 1 and direct.sockets - direct0.sockets == 1
    # Passive signals for local connections (sock_ops): handshakes answered, with RTT.
    assert relay.synacks - relay0.synacks == 1 and relay.rtt_count - relay0.rtt_count == 1
    assert direct.synacks - direct0.synacks == 1


AGENT = r"""
import json, sys, time
from argoctl import config, datapath, maps
import dataclasses
cfg = config.load(sys.argv[1])
cfg = dataclasses.replace(cfg, node=dataclasses.replace(cfg.node, steer_interfaces=(sys.argv[4],)))
res = datapath.attach(cfg, pin_dir=sys.argv[2], netns=sys.argv[3], cgroup=None)
sets = {1: [maps.Path(0, cfg.routing.mark(0), 0), maps.Path(1, cfg.routing.mark(1), 1)]}
datapath.program(cfg, pin_dir=sys.argv[2], pathsets=sets)
print(json.dumps({"compiled": res.compiled, "newly_attached": res.newly_attached}), flush=True)
while True:   # a daemon rewriting its decisions
    datapath.program(cfg, pin_dir=sys.argv[2], pathsets=sets)
    time.sleep(0.05)
"""


class UdpStream:
    """~1,000 datagrams/s from the client to the origin, sequence-numbered;
    the receiver remembers every sequence number and the source it came from."""

    def __init__(self, client, origin, rate=1000):
        with origin.inside():
            self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)   # past rmem_max
        self.rx.bind(("0.0.0.0", UDP_PORT))
        self.rx.settimeout(0.5)
        with client.inside():
            self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rate, self.sent, self.got, self.sources = rate, 0, set(), set()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._send, self._recv)]
        for t in self.threads:
            t.start()

    def _send(self):
        due = time.monotonic()
        while not self.stop.is_set():
            self.tx.sendto(self.sent.to_bytes(8, "big"), ("203.0.113.10", UDP_PORT))
            self.sent += 1
            # No catching up after this thread was starved (TCG): a burst of
            # hundreds would overflow the veth backlog, a loss not ours.
            due = max(due + 1 / self.rate, time.monotonic() - 0.005)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _recv(self):
        last = time.monotonic()
        while True:
            try:
                data, src = self.rx.recvfrom(64)
            except socket.timeout:
                # Drain: under TCG the last datagrams can be in flight for a while.
                if self.stop.is_set() and time.monotonic() - last > 3:
                    return
                continue
            last = time.monotonic()
            self.got.add(int.from_bytes(data[:8], "big"))
            self.sources.add(src[0])

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        self.tx.close()
        self.rx.close()


def drop_counters(env) -> dict:
    """Where a loss happened, if it did: socket buffers and the path's links."""
    out = {}
    snmp = env["origin"].run(["cat", "/proc/net/snmp"], check=True).stdout.splitlines()
    udp = [l.split()[1:] for l in snmp if l.startswith("Udp:")]
    out["origin_udp"] = {k: v for k, v in zip(*udp) if k in ("RcvbufErrors", "InErrors")}
    for host, peer in (("client", "edge"), ("edge", "relay"), ("relay", "origin")):
        h = env[host]
        out[f"{host}->{peer}"] = h.run(["ip", "-s", "-o", "link", "show", h.ifname(env[peer])],
                                       check=True).stdout.split("\\")[-4:]
    return out


def _start_agent(env):
    cfg_path = env["config_path"]
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT, cfg_path, env["pin_dir"], env["edge"].netns,
         env["edge"].ifname(env["client"])],
        stdout=subprocess.PIPE, text=True, cwd=str(Path(__file__).resolve().parents[2]))
    line = proc.stdout.readline()
    assert line, "agent died before it was ready"
    return proc, json.loads(line)


def test_kill_9_and_restart_adopts_the_datapath_without_losing_a_packet(env):
    steer(env, direct=0, relay=1)
    relay_addr = env["topo"].link(env["relay"], env["origin"]).address(env["relay"])
    stream = UdpStream(env["client"], env["origin"])
    first = second = None
    try:
        time.sleep(1)
        first, ready1 = _start_agent(env)
        time.sleep(1)
        first.kill()                       # SIGKILL: no cleanup of any kind
        first.wait()
        second, ready2 = _start_agent(env)
        time.sleep(2)
    finally:
        stream.finish()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert not ready1["compiled"] and not ready2["compiled"]     # adopted, never reloaded
    assert ready1["newly_attached"] == [] and ready2["newly_attached"] == []
    assert stream.sent > 3000
    assert stream.sources == {relay_addr}    # steered through the relay the whole time
    missing = sorted(set(range(stream.sent)) - stream.got)
    assert not missing, (f"{len(missing)} of {stream.sent} datagrams lost (seq {missing[:10]}, "
                         f"last sent {stream.sent - 1}); kernel drop counters: {drop_counters(env)}")
