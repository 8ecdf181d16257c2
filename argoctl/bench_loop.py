"""The measurement loop in the namespace lab: `argoctl bench failover` and
`argoctl bench control`, and the kit the loop's tests share.

Lab (argoctl/topo.py, the standard lab): edge runs the daemon (in-process, a
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

Everything runs in one process: each new Python process costs seconds in the VM.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Optional

import click

from argoctl import config as cfgmod
from argoctl import labconfig, mac
from argoctl.config import Routing

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

def write_configs(directory: str, policy: dict, kind: str = "gre") -> dict[str, cfgmod.Config]:
    """Lab configs (labconfig) with `policy` overrides on edge; loaded by the real loader."""
    topo = replace(labconfig.default_topology("netns"), policy=tuple(policy.items()))
    paths = labconfig.write_lab_configs(directory, topo, kind)
    return {host: cfgmod.load(p) for host, p in paths.items()}


def fake_paths(topo, cfg: cfgmod.Config) -> None:
    """tunnels="none": edge's fwmark rules, each peer's table routing to that relay's
    underlay link (peer "relayN" -> host relayN; other names cycle over the relays)."""
    relays = ["relay1", "relay2"]
    topo.fwmark_paths(cfg.routing, {
        peer.id: peer.name if peer.name in relays else relays[i % len(relays)]
        for i, peer in enumerate(cfg.peers)})


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
        self._start(self._loop, "sink")

    def _loop(self):
        while not self._halt.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(64, 64)
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

    def start(self, daemon: bool = True) -> "LoopLab":
        from argoctl import apply
        t = self.topo
        self.configs = write_configs(self.directory, self.policy)
        self.run_dir = os.path.join(self.directory, "run")
        self.pin_dir = f"/sys/fs/bpf/argoctl-{t['edge'].netns}"
        if self.tunnels == "gre":
            for r in ("relay1", "relay2"):
                apply.up(self.configs[r], ns=t[r].netns, run_dir=self.run_dir)
        else:
            fake_paths(t, self.configs["edge"])
        key = mac.read_key(self.configs["edge"].policy.responder_key_file)
        self.responder = ResponderThread(t["origin"], key)
        self.sink = Sink(t["origin"])
        if daemon:
            self.start_daemon()
        return self

    def start_daemon(self, **kw):
        from argoctl.daemon import Daemon, Options
        kw = {"metrics_listen": "", "apply_config": self.tunnels == "gre", **kw}
        opts = Options(ns=self.topo["edge"].netns, run_dir=self.run_dir, pin_dir=self.pin_dir,
                       cgroup=None, **kw)
        self.daemon = Daemon(self.configs["edge"], opts).start_thread()
        return self.daemon

    def wait_for(self, pred, timeout: float, step: float = 0.05) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(step)
        return pred()

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
            if self.cleanup:
                datapath.detach(self.pin_dir, netns=self.topo["edge"].netns, cgroup=None)


# -- bench failover ------------------------------------------------------------------

LINK_PATHS = {link: path for path, link in PATH_LINKS.items()}


def _steady_link(lab: LoopLab, first_idx: int, window: float) -> Optional[str]:
    """The one link the stream arrived on during the last `window` seconds while no
    path was in doubt, else None."""
    if lab.daemon._doubt:
        return None
    since = time.monotonic() - window
    links = {ifname for t, _, ifname in lab.sink.got[first_idx:] if t >= since}
    return links.pop() if len(links) == 1 else None


def failover_once(lab: LoopLab, pps: float, settle: float, timeout: float) -> dict:
    """Under a constant stream, blackhole the path it takes (once steady); time to
    the first datagram over another path, the first decision, datagrams lost."""
    t = lab.topo
    first_idx = len(lab.sink.got)          # the sink outlives runs; seqs restart per stream
    stream = Stream(t["client"], pps=pps)
    try:
        lab.wait_for(lambda: len(lab.sink.got) - first_idx > pps * 0.5, 10)
        steady = lab.wait_for(lambda: _steady_link(lab, first_idx, settle) is not None, 30, 0.1)
        link = _steady_link(lab, first_idx, settle) or lab.sink.got[-1][2]
        active = LINK_PATHS[link]
        others = set(PATH_LINKS.values()) - {link}
        far = "origin" if active == "direct" else active
        sent_before = len(stream.sent)
        t0 = time.monotonic()
        t.link("edge", far).impair(blackhole=True, direction="a->b")
        ok = lab.wait_for(lambda: lab.sink.first_on(others, t0) is not None, timeout, 0.005)
        first = lab.sink.first_on(others, t0)
        time.sleep(0.5)
        stream.stop()
        time.sleep(0.3)
        sent = len(stream.sent)
        seqs = {s for _, s, _ in lab.sink.got[first_idx:]}
        window = range(sent_before, sent)
        lost = sum(1 for s in window if s not in seqs)
        decision = next((r for r in lab.daemon.history if r.at >= t0), None)
        t.link("edge", far).clear()
        return {"active": active, "steady_before": steady,
                "moved_to": LINK_PATHS.get(next((l for tt, _, l in lab.sink.got[first_idx:]
                                                 if tt >= t0 and l in others), ""), None),
                "failover_ms": round((first - t0) * 1000, 1) if ok else None,
                "decision_ms": round((decision.at - t0) * 1000, 1) if decision else None,
                "lost": lost, "sent": len(window),
                "stream_pps": round(len(window) / (stream.sent[-1] - stream.sent[sent_before]), 1)
                if len(window) > 1 else None,
                "reason": decision.reason if decision else None}
    finally:
        stream.stop()


def kernel_label() -> str:
    return "vm-tcg" if os.environ.get("ARGOCTL_IN_VM") else "native"


@click.command("failover")
@click.option("--interval", "interval_ms", type=click.IntRange(min=10), default=50,
              show_default=True, metavar="MS")
@click.option("--multiplier", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--pps", type=click.FloatRange(min=10), default=1000, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--tunnels", type=click.Choice(["auto", "gre", "none"]), default="auto",
              show_default=True, help="auto: GRE if this kernel has it, else fwmark routes only")
@click.option("--json", "as_json", is_flag=True, help="(always JSON lines; for symmetry)")
def bench_failover(interval_ms: int, multiplier: int, pps: float, runs: int, tunnels: str,
                   as_json: bool) -> None:
    """Time from blackholing the active path to the first packet of a UDP stream
    over another path, and packets lost (namespace lab; needs root)."""
    from argoctl import vm
    from argoctl.bench import emit
    from argoctl.topo import Topology

    if tunnels == "auto":
        tunnels = "none" if "gre" in vm.missing_features() else "gre"
    policy = {"probe_interval_ms": interval_ms, "detect_multiplier": multiplier,
              "probe_timeout_ms": interval_ms * multiplier, "hold_down_s": 2.0,
              "recover_probes": 3, "metrics_listen": ""}
    results = []
    with tempfile.TemporaryDirectory() as tmp, Topology.default(f"agf{os.getpid()}") as t:
        t.start()
        lab = LoopLab(t, tmp, policy, tunnels=tunnels)
        try:
            lab.start()
            lab.wait_for(lambda: lab.choice() == "direct" and not lab.daemon._doubt, 30)
            for _ in range(runs):
                results.append(failover_once(lab, pps, settle=1.0, timeout=5.0))
                # let everything recover (hold-down) before the next run
                lab.wait_for(lambda: not lab.daemon._doubt, 20)
                time.sleep(policy["hold_down_s"] + 1)
        finally:
            lab.stop()
    ok = [r["failover_ms"] for r in results if r["failover_ms"] is not None]
    emit({"bench": "failover", "kernel": kernel_label(), "tunnels": tunnels,
          "interval_ms": interval_ms, "multiplier": multiplier, "pps": pps,
          "runs": results, "failover_ms_median": sorted(ok)[len(ok) // 2] if ok else None,
          "failover_ms_max": max(ok) if ok else None,
          "lost_max": max(r["lost"] for r in results) if results else None,
          "target_ms": 200})


# -- bench control -------------------------------------------------------------------

def control_ports(dests: int, targets: int) -> list[int]:
    """The responder port each destination probes: `targets` distinct ones."""
    if targets == 1:
        return [RESPONDER_PORT] * dests
    return [CONTROL_PORT_BASE + d % targets for d in range(dests)]


def control_config(directory: str, key_file: str, dests: int, paths: int,
                   interval_ms: int, targets: int = 1) -> cfgmod.Config:
    """edge with `paths` - 1 GRE peers (never brought up) and `dests` destinations,
    each a /64 of origin's IPv6 prefix probed over UDP at origin's responder, on
    one of `targets` ports (one port: every destination measures the same thing
    and they share probes; as many as destinations: nothing is shared)."""
    peers = [f"relay{i}" for i in range(1, paths)]
    out = ['[node]', 'name = "edge"', 'address = "192.0.2.1"', 'tunnel_address = "198.51.100.129"',
           'steer_interfaces = ["to-client"]']
    for i, p in enumerate(peers):
        out += ["[[peer]]", f'name = "{p}"', f'address = "192.0.2.{2 + i % 2}"', 'tunnel = "gre"',
                f'tunnel_address = "198.51.100.{130 + i}"', f"gre_key = {i + 1}"]
    plist = ", ".join(json.dumps(p) for p in ["direct", *peers])
    for d, port in enumerate(control_ports(dests, targets)):
        out += ["[[destination]]", f'name = "d{d}"', f'prefixes = ["2001:db8:f:{d:x}::/64"]',
                f"paths = [{plist}]",
                f'probe = {{ kind = "udp", target = "{ORIGIN}", port = {port} }}']
    out += ["[policy]", f"probe_interval_ms = {interval_ms}", f'responder_key_file = "{key_file}"',
            'metrics_listen = ""']
    path = os.path.join(directory, "control.toml")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return cfgmod.load(path)


@click.command("control")
@click.option("--destinations", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--paths", type=click.IntRange(min=1, max=8), default=4, show_default=True)
@click.option("--interval", "interval_ms", type=click.IntRange(min=10), default=1000,
              show_default=True, metavar="MS")
@click.option("--seconds", type=click.FloatRange(min=1), default=20, show_default=True)
@click.option("--targets", type=click.IntRange(min=1, max=1000), multiple=True,
              default=(1000, 1), show_default=True,
              help="distinct probe targets (responder ports) the destinations spread over; "
                   "repeat for one run each")
@click.option("--far-end", type=click.Choice(["threaded", "inline"]), default="threaded",
              show_default=True,
              help="threaded: each lab host receives in its own kernel threads (as separate "
                   "hosts), edge's counted as the agent's; inline: plain veth, where the far "
                   "ends' receive and forwarding run in, and are charged to, the sender")
@click.option("--json", "as_json", is_flag=True, help="(always JSON lines; for symmetry)")
def bench_control(destinations: int, paths: int, interval_ms: int, seconds: float,
                  targets: tuple[int, ...], far_end: str, as_json: bool) -> None:
    """Agent CPU (process CPU / wall) of `argoctl run`'s loop for DESTINATIONS x PATHS
    probed every INTERVAL, with datapath, decisions, state file and metrics
    (namespace lab, fwmark paths, responder in its own process; needs root).

    One run per --targets: with as many targets as destinations every
    (destination, path) is its own probe stream (DESTINATIONS x PATHS probes per
    interval, the worst case); with one, all destinations measure the same origin
    and share a stream per path (Config.measurement)."""
    from argoctl.bench import emit
    for n in targets:
        emit(_control_run(destinations, paths, interval_ms, seconds, min(n, destinations),
                          far_end))


def threaded_receive(topo, agent: str) -> list[int]:
    """Make every link end receive in a kernel thread of its own (veth NAPI,
    threaded), as separate hosts would. Otherwise a veth transmit runs the far
    end's receive path (and a relay's forwarding) in the sender's context, and
    the kernel charges that work to the sender as system time. Returns the pids
    of `agent`'s own receive threads: its share, counted as agent CPU."""
    mine: list[int] = []
    for link in topo.links:
        for end in (link.a, link.b):
            before = _napi_threads()
            end.host.run(["ethtool", "-K", end.ifname, "gro", "on", "rx-udp-gro-forwarding", "on"],
                         check=True)
            end.host.run(["sh", "-c", f"echo 1 > /sys/class/net/{end.ifname}/threaded"],
                         check=True)
            if end.host.name == agent:
                mine += sorted(_napi_threads() - before)
    return mine


def _napi_threads() -> set[int]:
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().startswith("napi/"):
                        out.add(int(pid))
            except OSError:
                pass
    return out


def _threads_cpu(pids: list[int]) -> tuple[float, float]:
    """(user, system) seconds of these threads (/proc/PID/stat utime, stime)."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    hz = os.sysconf("SC_CLK_TCK")
    return user / hz, system / hz


def _control_run(destinations: int, paths: int, interval_ms: int, seconds: float,
                 targets: int, far_end: str = "threaded") -> dict:
    from argoctl.daemon import Daemon, Options
    from argoctl import datapath
    from argoctl.topo import Topology

    with tempfile.TemporaryDirectory() as tmp, Topology.default(f"agc{os.getpid()}") as t:
        t.start()
        rx_threads = threaded_receive(t, "edge") if far_end == "threaded" else []
        key_file = os.path.join(tmp, "probe.key")
        mac.write_key(key_file)
        cfg = control_config(tmp, key_file, destinations, paths, interval_ms, targets)
        fake_paths(t, cfg)
        rate = str(destinations * paths * 4000 / interval_ms)
        listen = [a for port in sorted(set(control_ports(destinations, targets)))
                  for a in ("--listen", f"0.0.0.0:{port}")]
        t["origin"].popen([sys.executable, "-m", "argoctl", "responder", *listen,
                           "--key-file", key_file, "--rate", rate,
                           "--global-rate", rate], stderr=subprocess.DEVNULL)
        pin_dir = f"/sys/fs/bpf/argoctl-{t['edge'].netns}"
        d = Daemon(cfg, Options(ns=t["edge"].netns, run_dir=os.path.join(tmp, "run"),
                                pin_dir=pin_dir, cgroup=None, metrics_listen="127.0.0.1:0",
                                apply_config=False, freeze_heap=True))   # as `argoctl run`
        try:
            d.start_thread()
            time.sleep(max(3.0, 3 * interval_ms / 1000))      # warm-up: every path measured
            scrape = d.exporter.text()                        # one scrape: its cost is counted
            def results() -> int:
                return sum(p.received + p.lost for p in d.sched.streams())
            r0, w0, res0 = d.rounds, d.map_writes, results()
            cpu0, t0, rx0 = os.times(), time.monotonic(), _threads_cpu(rx_threads)
            time.sleep(seconds)
            s0 = time.thread_time()
            scrape = d.exporter.text()
            scrape_cpu = time.thread_time() - s0
            cpu1, t1, rx1 = os.times(), time.monotonic(), _threads_cpu(rx_threads)
            wall = t1 - t0
            # the agent: this process plus edge's receive threads (its own packets)
            user = cpu1.user - cpu0.user + rx1[0] - rx0[0]
            system = cpu1.system - cpu0.system + rx1[1] - rx0[1]
            ups = sum(1 for n in d.engine.destinations() for s in d.engine.last(n).scores.values()
                      if s.state.value == "up")
            record = {
                "bench": "control", "kernel": kernel_label(), "destinations": destinations,
                "paths": paths, "probe_targets": targets,
                "probe_streams": len(d.sched.streams()),
                "interval_ms": interval_ms, "seconds": seconds,
                "cpu_percent_of_core": round(100 * (user + system) / wall, 2),
                "cpu_user_percent": round(100 * user / wall, 2),
                "cpu_system_percent": round(100 * system / wall, 2),
                # threaded: every lab host receives in its own kernel threads and
                # edge's count as the agent's; inline: veth runs the far ends'
                # receive (and relays' forwarding) in this process, counted here
                "far_end": far_end,
                "agent_rx_threads_percent": round(100 * (sum(rx1) - sum(rx0)) / wall, 2),
                "probe_results_per_s": round((results() - res0) / wall, 1),
                "rounds_per_s": round((d.rounds - r0) / wall, 2),
                "map_write_batches": d.map_writes - w0,
                "paths_up": ups, "metrics_bytes": len(scrape),
                "metrics_scrape_cpu_ms": round(scrape_cpu * 1000, 1), "target_percent": 10}
        finally:
            try:
                d.stop()                # (raises if the loop had failed)
            finally:
                datapath.detach(pin_dir, netns=t["edge"].netns, cgroup=None)
    return record


# -- forged and replayed replies -------------------------------------------------------

def probe_port(daemon, path: str) -> int:
    """The local UDP port of the daemon's probe socket for `path` (IPv4)."""
    mark = daemon.cfg.routing.mark(daemon.cfg.path_id(path))
    return daemon.sched.channels[("udp", mark, socket.AF_INET)].sock.getsockname()[1]


def capture_replies(host, ifname: str, port: int, seconds: float) -> list[bytes]:
    """What an on-path eavesdropper sees: UDP payloads to `port` arriving on `ifname`."""
    with host.inside():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    out = []
    with s:
        s.bind((ifname, 0x0800))
        s.settimeout(0.1)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                pkt = s.recv(2048)
            except socket.timeout:
                continue
            ihl = (pkt[0] & 0x0F) * 4
            if pkt[9] == socket.IPPROTO_UDP and struct.unpack("!H", pkt[ihl + 2:ihl + 4])[0] == port:
                out.append(pkt[ihl + 8:])
    return out


def ip_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP datagram (UDP checksum 0: none) for a raw socket."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP,
                       0, socket.inet_aton(src), socket.inet_aton(dst)) + udp


def spoof(host, payloads, src: str, sport: int, dst: str, dport: int,
          pps: float = 500) -> int:
    """Send `payloads` from `host` with a forged source address; returns how many."""
    with host.inside():
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    n = 0
    with raw:
        for p in payloads:
            raw.sendto(ip_udp(src, sport, dst, dport, p), (dst, 0))
            n += 1
            time.sleep(1.0 / pps)
    return n


def forged_replies(captured: list[bytes], count: int) -> list[bytes]:
    """Replies made without the key: a wrong key's MACs, captured ones with a flipped
    bit, and garbage."""
    evil = mac.EchoKey(b"not-the-key-".ljust(32, b"x"))
    out = [evil.reply(mac.Echo(mac.REQUEST, s, time.monotonic_ns(), os.urandom(16), 0), 1)
           for s in range(1, count + 1)]
    out += [c[:30] + bytes([c[30] ^ 0xFF]) + c[31:] for c in captured]
    out += [b"", b"x" * 64]
    return out
