"""`argoctl bench control`: the agent's CPU for its whole loop at scale, in the
loop lab (argoctl/lab/loop.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import click
from argoctl import config as cfgmod
from argoctl import mac

from argoctl.bench.report import emit
from argoctl.lab.loop import CONTROL_PORT_BASE, ORIGIN, RESPONDER_PORT, fake_paths
from argoctl.lab.vm import kernel_label

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
    from argoctl import datapath, home
    from argoctl.lab.topo import Topology

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
        pin_dir = home.pin_dir(t["edge"].netns)
        d = Daemon(cfg, Options(ns=t["edge"].netns, run_dir=os.path.join(tmp, "run"),
                                cgroup=None, metrics_listen="127.0.0.1:0",
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


