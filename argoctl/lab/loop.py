"""The measurement loop in the namespace lab: `argoctl bench failover` and
`argoctl bench control`, and the kit the loop's tests share.

Lab (argoctl/lab/topo.py, the standard lab): edge runs the daemon (in-process, a
thread in edge's namespace) steering client -> origin over direct, relay1 or
relay2; origin runs the responder and a UDP sink that notes, per datagram,
the interface it arrived on (IP_PKTINFO): to-edge is the direct path,
to-relay1 / to-relay2 the relays. Two ways to make the relay paths:

- tunnels="gre": the real thing. `up` on relay1 and relay2 (GRE to edge,
  masquerade), and the daemon runs `up` on edge. Needs GRE: the VM.
- tunnels="none": the host kernel has no GRE, so edge's path N is a fwmark
  rule and table routing everything to relay N's underlay link; the relay
  forwards to origin, origin answers straight to edge. Same marks, same
  datapath, same decisions; no tunnel.

The edge's daemon and the lab's traffic run in this process (a new Python
process costs seconds in the VM); origin's responder and, in fleet mode, the
relays' daemons can run as processes of their own (argoctl/lab/processes.py).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Optional


from argoctl import config as cfgmod
from argoctl import mac
from argoctl.lab import configs as labconfig
from argoctl.lab.processes import DaemonProcess, ResponderProcess, wait_for

ORIGIN = "203.0.113.10"
RESPONDER_PORT = labconfig.RESPONDER_PORT
CONTROL_PORT_BASE = 20000       # bench control: one responder port per distinct target
SINK_PORT = 9000
TCP_PORT = 9001
IP_PKTINFO = 8
_PKTINFO = struct.Struct("=I4s4s")
_SEQ = struct.Struct("!Q")
PATH_LINKS = {"direct": "to-edge", "relay1": "to-relay1", "relay2": "to-relay2"}


# -- configs -----------------------------------------------------------------------

def write_configs(directory: str, policy: dict, kind: str = "gre", fleet: Optional[dict] = None,
                  credentials: Optional[dict] = None,
                  tunnels: Optional[dict] = None) -> dict[str, cfgmod.Config]:
    """Lab configs (labconfig) with `policy` overrides on edge; loaded by the real loader.
    With `fleet` ([fleet] settings; `credentials`: host -> NATS credentials file)
    every host gets the section and the relays probe the origin themselves.
    `tunnels`: relay -> tunnel kind where it is not `kind`."""
    topo = replace(labconfig.default_topology("netns"), policy=tuple(policy.items()),
                   tunnels=tuple((tunnels or {}).items()))
    if fleet:
        topo = replace(topo, relays_probe=True, fleet=tuple(fleet.items()))
    paths = labconfig.write_lab_configs(directory, topo, kind, credentials=credentials)
    return {host: cfgmod.load(p) for host, p in paths.items()}


def fake_paths(topo, cfg: cfgmod.Config, edge: str = "edge") -> None:
    """tunnels="none": the edge's fwmark rules, each peer's table routing to that
    relay's underlay link (a peer named like a lab host -> that host; other names
    cycle over those)."""
    relays = [p.name for p in cfg.peers if p.name in topo.hosts] or ["relay1", "relay2"]
    topo.fwmark_paths(cfg.routing, {
        peer.id: peer.name if peer.name in relays else relays[i % len(relays)]
        for i, peer in enumerate(cfg.peers)}, edge=edge)


# -- datapaths compiled ahead of their daemons ------------------------------------

# one namespace's datapath, compiled and pinned by a process of its own
_COMPILE = "import sys; from argoctl import datapath; datapath.ensure_loaded(sys.argv[1])"


def compile_datapaths(hosts: dict[str, str], pins: dict, workers: int = 2) -> None:
    """Each host's datapath (host -> its namespace) compiled and pinned where
    its daemon looks (home.pin_dir), each by a process of its own, `workers` at
    a time: bcc cannot compile in two threads of one process, and a compile is
    seconds (~1 min in a loaded TCG VM). The daemons started afterwards adopt
    the pins, as `argoctl run` adopts what `argoctl up` loaded. Each pin
    directory goes into `pins` (pin directory -> namespace) before its compile
    starts: remove_datapaths(pins) removes what is left of them (a failure
    half-way, a daemon that never started)."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor
    from argoctl import home

    def one(host: str) -> None:
        pin_dir = home.pin_dir(hosts[host])
        pins[pin_dir] = hosts[host]
        proc = subprocess.run([sys.executable, "-c", _COMPILE, pin_dir], capture_output=True,
                              text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"{host}: compiling the datapath failed: {proc.stderr[-2000:]}")
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(one, hosts))


def remove_datapaths(pins: dict) -> None:
    """What compile_datapaths pinned and is still there, detached (in its own
    namespace: never the root's) and unpinned; `pins` emptied."""
    from argoctl import datapath
    for pin_dir, ns in list(pins.items()):
        if os.path.isdir(pin_dir):
            datapath.detach(pin_dir, netns=ns, cgroup=None)
        del pins[pin_dir]


# -- traffic -----------------------------------------------------------------------

class _Thread:
    def __init__(self):
        self._halt = threading.Event()
        self._t: Optional[threading.Thread] = None

    def _start(self, target, name):
        self._t = threading.Thread(target=target, name=name, daemon=True)
        self._t.start()

    def stop(self):
        self._halt.set()
        if self._t is not None:
            self._t.join(10)


class Sink(_Thread):
    """UDP sink in `host`: per datagram (arrival time, seq, interface name)."""

    def __init__(self, host, port: int = SINK_PORT):
        super().__init__()
        with host.ipr() as ipr:
            self.ifnames = {l["index"]: l.get_attr("IFLA_IFNAME") for l in ipr.get_links()}
        with host.inside():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("0.0.0.0", port))
        self.sock.settimeout(0.2)
        self.got: list[tuple[float, int, str]] = []
        self.sources: list[tuple[float, str, str]] = []    # (arrival, source, interface)
        self._start(self._loop, "sink")

    def _loop(self):
        while not self._halt.is_set():
            try:
                data, anc, _, src = self.sock.recvmsg(64, 64)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            ifname = "?"
            for level, type_, cdata in anc:
                if level == socket.IPPROTO_IP and type_ == IP_PKTINFO:
                    ifname = self.ifnames.get(_PKTINFO.unpack_from(cdata)[0], "?")
            if len(data) >= _SEQ.size:
                self.got.append((now, _SEQ.unpack_from(data)[0], ifname))
                self.sources.append((now, src[0], ifname))

    def stop(self):
        super().stop()
        self.sock.close()

    def by_link(self, since: float = 0.0) -> dict[str, int]:
        out: dict[str, int] = {}
        for t, _, ifname in list(self.got):
            if t >= since:
                out[ifname] = out.get(ifname, 0) + 1
        return out

    def first_on(self, links, since: float) -> Optional[float]:
        for t, _, ifname in list(self.got):
            if t >= since and ifname in links:
                return t
        return None

    def first_from(self, links, since: float) -> dict[str, float]:
        """Per source address: when its first datagram since `since` arrived on one of `links`."""
        out: dict[str, float] = {}
        for t, src, ifname in list(self.sources):
            if t >= since and ifname in links and src not in out:
                out[src] = t
        return out


class Stream(_Thread):
    """A constant-rate UDP stream from `host` (one flow: one source port)."""

    def __init__(self, host, pps: float = 200, dst: str = ORIGIN, port: int = SINK_PORT):
        super().__init__()
        with host.inside():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.dst, self.pps = (dst, port), pps
        self.sent: list[float] = []          # send time of seq i
        self._start(self._loop, "stream")

    def _loop(self):
        gap = 1.0 / self.pps
        nxt = time.monotonic()
        seq = 0
        pad = bytes(64)
        while not self._halt.is_set():
            now = time.monotonic()
            if now < nxt:
                time.sleep(min(nxt - now, 0.01))
                continue
            try:
                self.sock.sendto(_SEQ.pack(seq) + pad, self.dst)
            except OSError:
                pass
            self.sent.append(now)
            seq += 1
            nxt += gap
            if nxt < now - 0.5:       # fell far behind (a slow VM): do not burst
                nxt = now

    def stop(self):
        super().stop()
        self.sock.close()


class TcpServer(_Thread):
    """Accepts connections in `host`, remembering each peer address (a relay
    masquerades to its own: the peer says which path the connection took)."""

    def __init__(self, host, port: int = TCP_PORT):
        super().__init__()
        with host.inside():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.peers: list[str] = []
        self._start(self._loop, "tcp")

    def _loop(self):
        while not self._halt.is_set():
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.peers.append(peer[0])
            conn.close()

    def stop(self):
        super().stop()
        self.sock.close()


def tcp_connect(host, dst: str = ORIGIN, port: int = TCP_PORT, timeout: float = 3.0) -> bool:
    with host.inside():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(timeout)
        try:
            s.connect((dst, port))
            return True
        except OSError:
            return False


class Connector(_Thread):
    """New TCP connections from `host`, one every 1/rate seconds, each in its own
    thread so a slow handshake does not delay the next: `attempts` holds
    (start, seconds to connect or None if it failed within `timeout`). `dst`: an
    address, or several taken in turn."""

    def __init__(self, host, rate: float = 10, dst: str | tuple[str, ...] = ORIGIN,
                 port: int = TCP_PORT, timeout: float = 5.0):
        super().__init__()
        self.host, self.rate, self.timeout = host, rate, timeout
        self.dsts = [(a, port) for a in ((dst,) if isinstance(dst, str) else dst)]
        self.attempts: list[tuple[float, Optional[float]]] = []
        self._workers: list[threading.Thread] = []
        self._start(self._loop, "connector")

    def _one(self, sock: socket.socket, dst: tuple[str, int]) -> None:
        t0 = time.monotonic()
        with sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(dst)
                ok = time.monotonic() - t0
            except OSError:
                ok = None
        self.attempts.append((t0, ok))

    def _loop(self) -> None:
        nxt = time.monotonic()
        while not self._halt.is_set():
            now = time.monotonic()
            if now < nxt:
                time.sleep(min(nxt - now, 0.01))
                continue
            nxt = max(nxt + 1.0 / self.rate, now - 0.5)
            with self.host.inside():
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            dst = self.dsts[len(self._workers) % len(self.dsts)]
            w = threading.Thread(target=self._one, args=(sock, dst), daemon=True)
            w.start()
            self._workers.append(w)

    def stop(self) -> None:
        """Stop opening; wait for the connections in flight to end."""
        super().stop()
        for w in self._workers:
            w.join(self.timeout + 5)


# The same opener as Connector, as a process of its own: a process (not a
# thread) can be put in a cgroup, so its sockets meet the cgroup socket hooks.
# Stops opening when stdin closes, then prints its attempts as JSON.
_LOCAL_CONNECTOR = r"""
import json, socket, sys, threading, time
dst, port, rate, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
attempts, workers, halt = [], [], threading.Event()
def one():
    t0 = time.monotonic()
    with socket.socket() as s:
        s.settimeout(timeout)
        try:
            s.connect((dst, port)); ok = time.monotonic() - t0
        except OSError:
            ok = None
    attempts.append((t0, ok))
threading.Thread(target=lambda: (sys.stdin.read(), halt.set()), daemon=True).start()
print("ready", flush=True)
nxt = time.monotonic()
while not halt.is_set():
    now = time.monotonic()
    if now < nxt:
        time.sleep(min(nxt - now, 0.01)); continue
    nxt = max(nxt + 1.0 / rate, now - 0.5)
    w = threading.Thread(target=one, daemon=True); w.start(); workers.append(w)
for w in workers:
    w.join(timeout + 5)
print(json.dumps(attempts), flush=True)
"""


class LocalConnector:
    """Connector's traffic from a process of `host` placed in `cgroup` before it
    runs (CLOCK_MONOTONIC is system-wide: its times compare with ours)."""

    def __init__(self, host, cgroup: str, rate: float = 10, dst: str = ORIGIN,
                 port: int = TCP_PORT, timeout: float = 5.0):
        import subprocess
        import sys

        def enter_cgroup():
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        self.attempts: list[tuple[float, Optional[float]]] = []
        self.proc = host.popen([sys.executable, "-I", "-c", _LOCAL_CONNECTOR, dst, str(port),
                                str(rate), str(timeout)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, preexec_fn=enter_cgroup)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("local connector did not start")

    def stop(self) -> None:
        import json
        out, _ = self.proc.communicate("", timeout=120)
        self.attempts = [tuple(a) for a in json.loads(out.strip().splitlines()[-1])]


class ResponderThread(_Thread):
    """`argoctl responder` in-process in `host` (its own event loop)."""

    def __init__(self, host, key: mac.EchoKey, port: int = RESPONDER_PORT):
        super().__init__()
        from argoctl.responder import Responder
        self.server = Responder(key, [("0.0.0.0", port)], rate=1e6, global_rate=1e6)
        with host.inside():
            self.server.bind()
        self._ready = threading.Event()
        self._start(self._run, "responder")
        self._ready.wait(10)

    def _run(self):
        async def main():
            self._loop = asyncio.get_running_loop()
            self._ev = asyncio.Event()
            self._ready.set()
            await self.server.serve(self._ev)
        asyncio.run(main())

    def stop(self):
        if self._t is not None and self._t.is_alive():
            self._loop.call_soon_threadsafe(self._ev.set)
            self._t.join(10)


# -- the lab with a running daemon ---------------------------------------------------

@dataclass
class LoopLab:
    """A started standard lab with relays, responder, sink and the edge daemon."""
    topo: object
    directory: str
    policy: dict
    tunnels: str = "gre"
    cleanup: bool = True
    configs: dict = field(default_factory=dict)
    daemon: object = None
    responder: object = None
    sink: object = None
    pin_dir: str = ""
    cgroup: Optional[str] = None   # cgroup for the socket hooks (None: no local steering)
    # fleet mode: a started NatsFleet (argoctl/lab/nats.py) with users edge,
    # relay1, relay2, and the [fleet] settings besides its servers; the relays
    # then run daemons too (in fleet mode they probe the origin and publish).
    # Given to start(), or later to enter_fleet() (leave_fleet() goes back).
    nats: object = None
    fleet: dict = field(default_factory=dict)
    # relay -> tunnel kind where it is not GRE (tunnels="gre" only), e.g.
    # {"relay2": "wireguard"}
    kinds: dict = field(default_factory=dict)
    relay_daemons: dict = field(default_factory=dict)
    relay_start_s: Optional[float] = None      # how long the relays' daemons took to start
    relay_compile_s: Optional[float] = None    # of which compiling their datapaths
    relay_datapaths: dict = field(default_factory=dict)  # relay -> "adopted" (or "compiled")
    _relay_pins: dict = field(default_factory=dict)    # compile_datapaths
    reload_s: Optional[float] = None           # the edge daemon's last reload
    # origin's responder as its own process (ResponderProcess), not a thread here
    responder_process: bool = False

    def start(self, daemon: bool = True) -> "LoopLab":
        from argoctl import home
        t = self.topo
        self.run_dir = os.path.join(self.directory, "run")
        self.pin_dir = home.pin_dir(t["edge"].netns)      # where the daemon's pins go
        self._tunnel_addresses = False
        fleet = self._write_configs()
        if self.tunnels == "gre":
            self._up_relays()
        else:
            fake_paths(t, self.configs["edge"])
        key_file = self.configs["edge"].policy.responder_key_file
        if self.responder_process:
            self.responder = ResponderProcess(t["origin"], key_file, RESPONDER_PORT)
        else:
            self.responder = ResponderThread(t["origin"], mac.read_key(key_file))
        self.sink = Sink(t["origin"])
        if fleet:
            self._start_relays()
        if daemon:
            self.start_daemon()
        return self

    def _write_configs(self) -> Optional[dict]:
        """Every host's config for the current mode; returns the [fleet] settings
        (None: local mode)."""
        fleet = creds = None
        if self.nats is not None:
            fleet = {"servers": tuple(self.nats.urls), **self.fleet}
            creds = {h: self.nats.credentials(h) for h in ("edge", *labconfig.RELAYS)}
        kinds = self.kinds if self.tunnels == "gre" else None
        self.configs = write_configs(self.directory, self.policy, fleet=fleet,
                                     credentials=creds, tunnels=kinds)
        return fleet

    def _up_relays(self) -> None:
        """The relays' tunnels, rules and nft as their configs say (they steer
        nothing; a changed tunnel kind is a device replaced)."""
        from argoctl import apply
        for r in labconfig.RELAYS:
            apply.up(self.configs[r], ns=self.topo[r].netns, run_dir=self.run_dir,
                     stages=("links", "nft"))

    def _start_relays(self) -> None:
        """Fleet mode: the relays' daemons (probing the origin, publishing legs)."""
        t = self.topo
        if self.tunnels != "gre" and not self._tunnel_addresses:
            # edge's tunnel legs: the relays answer on their tunnel addresses
            for r in labconfig.RELAYS:
                t.add_address(t[r], labconfig.TUNNEL_ADDRESSES[r])
            self._tunnel_addresses = True
        started = time.monotonic()
        # compiled side by side first (seconds each, a minute in the VM), then adopted
        compile_datapaths({r: t[r].netns for r in labconfig.RELAYS}, self._relay_pins)
        self.relay_compile_s = round(time.monotonic() - started, 1)
        # each a process of its own (argoctl/lab/processes.py: why), started side by side
        for r in labconfig.RELAYS:
            self.relay_daemons[r] = DaemonProcess(
                self.configs[r].path, t[r].netns, self.run_dir,
                os.path.join(self.directory, f"{r}-daemon.log"))
        for r, d in self.relay_daemons.items():
            self.relay_datapaths[r] = d.wait_started().datapath
        self.relay_start_s = round(time.monotonic() - started, 1)

    def _stop_relays(self) -> None:
        """The relays' daemons stopped, their datapaths detached and unpinned
        (also those compiled for a daemon that never started)."""
        relays, self.relay_daemons = self.relay_daemons, {}
        for r, d in relays.items():
            status = d.stop()
            if status not in (0, None):
                print(f"argoctl lab: {r}'s daemon exited with {status}: {d.log_tail(400)}",
                      file=sys.stderr)
        remove_datapaths(self._relay_pins)

    def enter_fleet(self, nats, fleet: dict, kinds: Optional[dict] = None) -> None:
        """Switch the running lab to fleet mode: every config gains [fleet]
        (`nats`'s servers, `fleet`'s settings), the relays' tunnels change to
        `kinds` (tunnels="gre"), the relays' daemons start and the edge's daemon
        reloads its config, as SIGHUP does (its traffic stays where it is)."""
        self.nats, self.fleet, self.kinds = nats, dict(fleet), dict(kinds or {})
        self._switch()

    def leave_fleet(self) -> None:
        """Back to the lab as started without fleet mode: the relays' daemons stop,
        their tunnels are GRE again, the edge reloads its config without [fleet]."""
        self._stop_relays()
        self.nats, self.kinds = None, {}
        self._switch()

    def _switch(self) -> None:
        fleet = self._write_configs()
        if self.tunnels == "gre":
            self._up_relays()
        if fleet:
            self._start_relays()
        if self.daemon is not None:
            self.reload_edge()

    def reload_edge(self) -> None:
        """The edge's daemon re-reads its config (reload.reload: what SIGHUP does)."""
        from argoctl import reload as reloadmod
        started = time.monotonic()
        d = self.daemon
        d.stop_serving()
        nxt = reloadmod.reload(d)
        if nxt is d:            # refused or failed: the previous config runs on
            d.serve_thread()
            raise RuntimeError(f"the edge's daemon did not reload {d.cfg.path} "
                               "(its log says why)")
        self.daemon = nxt.serve_thread()
        self.reload_s = round(time.monotonic() - started, 1)

    def start_daemon(self, **kw):
        from argoctl.daemon import Daemon, Options
        kw = {"metrics_listen": "", "apply_config": self.tunnels == "gre", **kw}
        opts = Options(ns=self.topo["edge"].netns, run_dir=self.run_dir, cgroup=self.cgroup, **kw)
        self.daemon = Daemon(self.configs["edge"], opts).start_thread()
        return self.daemon

    def wait_for(self, pred, timeout: float, step: float = 0.05) -> bool:
        return wait_for(pred, timeout, step)

    def choice(self, dest: str = "origin") -> str:
        return self.daemon.choices()[dest]

    def stop(self):
        from argoctl import datapath
        for x in (self.sink, self.responder):
            if x is not None:
                x.stop()
        try:
            if self.daemon is not None:
                self.daemon.stop()      # (raises if the loop had failed)
        finally:
            self._stop_relays()
            if self.cleanup:
                datapath.detach(self.pin_dir, netns=self.topo["edge"].netns, cgroup=self.cgroup)
