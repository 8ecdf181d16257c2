"""`argoctl bench reroute`: new TCP connections across a blackhole of the direct
path, with protective reroute on and off in the same run.

The loop lab with GRE tunnels (argoctl/lab/loop.py; needs the VM), probes at
their defaults (1 s x 3). Connections to origin are opened continuously from
the client behind edge (forwarded: tc) and from a process on edge itself
(local: cgroup hooks and sock_ops). The direct path is blackholed both ways;
each connection opened during the first `window` seconds of the blackhole
counts: ok if it completed within the connect timeout; p50/p99 are the connect
times of those that completed.

Off is the datapath's switch (settings.flags) cleared between runs: the same
daemon, maps and probes; only the reroute differs. Without it, a connection
whose SYN went into the blackhole waits for the probes to mark direct down,
then for its next SYN retransmission (1 s, 3 s, 7 s after it started).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Optional

import click

from argoctl.bench.report import emit
from argoctl.lab.loop import Connector, LocalConnector, LoopLab, TcpServer

# Probes at their defaults; shorter hold-down and recovery only so direct is
# back (and chosen) for the next run within seconds, not minutes.
POLICY = {"hold_down_s": 2.0, "recover_probes": 3, "metrics_listen": ""}
RELAY_DELAY_MS = 10      # each way on edge-relay links: direct is clearly the fastest


def make_cgroup(tag: str) -> str:
    """A cgroup of our own for the edge's socket hooks."""
    from argoctl import datapath
    root = os.environ.get("ARGOCTL_CGROUP2") or datapath.cgroup2_root()
    if root is None:
        raise click.ClickException("no cgroup2 hierarchy mounted")
    path = os.path.join(root, f"argoctl-{tag}{os.getpid()}")
    os.makedirs(path, exist_ok=True)
    return path


def start_lab(topo, directory: str, cgroup: str, tunnels: str = "gre") -> LoopLab:
    """The loop lab with a TCP server on origin and the daemon's socket hooks on
    `cgroup`. tunnels="none" (a kernel without GRE or netem): fwmark paths, no
    relay delay; only a one-way blackhole then leaves origin a way back."""
    if tunnels == "gre":
        for r in ("relay1", "relay2"):
            topo.link("edge", r).impair(delay_ms=RELAY_DELAY_MS, direction="both")
    lab = LoopLab(topo, directory, POLICY, tunnels=tunnels, cgroup=cgroup)
    lab.start(daemon=False)
    lab.tcp = TcpServer(topo["origin"])
    lab.start_daemon()
    return lab


def steady(lab: LoopLab, timeout: float = 90) -> bool:
    """Direct chosen and every path up (after a blackhole: hold-down, recovery)."""
    def ok():
        dec = lab.daemon.engine.last("origin")
        return (dec is not None and dec.choice == "direct"
                and {s.state.value for s in dec.scores.values()} == {"up"})
    return lab.wait_for(ok, timeout, 0.1)


def set_reroute(lab: LoopLab, on: bool) -> None:
    from argoctl import maps
    with maps.Maps(lab.pin_dir) as m:
        m.write_settings(m.settings().fwmark_mask, reroute=on)


def reroutes(lab: LoopLab, path: str = "direct") -> int:
    from argoctl import maps
    with maps.Maps(lab.pin_dir) as m:
        return m.path_stats(lab.configs["edge"].path_id(path)).reroutes


def blackhole_run(lab: LoopLab, window: float = 5.0, rate: float = 10, timeout: float = 5.0,
                  lead: float = 1.0, direction: str = "both") -> dict:
    """Open connections from client (forwarded) and edge (local) for `lead`
    seconds, blackhole edge-origin (both ways, or "a->b": edge to origin only),
    keep opening for `window` more;
    wait for every connection to end; lift the blackhole. Returns the attempts
    started inside the window, by source: [(start - blackhole, seconds or None)]."""
    t = lab.topo
    local = LocalConnector(t["edge"], lab.cgroup, rate=rate, timeout=timeout)
    fwd = Connector(t["client"], rate=rate, timeout=timeout)
    moved0 = reroutes(lab)
    try:
        time.sleep(lead)
        # The window starts when the blackhole starts going in: setting it up runs
        # commands that take seconds under TCG, long enough for the probes to move
        # traffic before they return (a window started then measured nothing).
        t0 = time.monotonic()
        t.link("edge", "origin").impair(blackhole=True, direction=direction)
        setup_s = time.monotonic() - t0
        time.sleep(max(0.0, window - setup_s))
    finally:
        fwd.stop()
        local.stop()
        t.link("edge", "origin").clear()
    decision = next((r for r in lab.daemon.history if r.at >= t0), None)
    out = {"reroutes": reroutes(lab) - moved0, "blackhole_setup_ms": round(setup_s * 1000),
           "decision_ms": round((decision.at - t0) * 1000) if decision else None}
    for name, c in (("forwarded", fwd), ("local", local)):
        out[name] = [(s - t0, ok) for s, ok in c.attempts if t0 <= s < t0 + window]
    return out


def percentile(values: list[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (q in 0..100) of the values, None if there are none."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, min(len(v) - 1, math.ceil(len(v) * q / 100) - 1))]


def summary(run: dict) -> dict:
    attempts = run["forwarded"] + run["local"]
    done = [ok for _, ok in attempts if ok is not None]
    ms = [x * 1000 for x in done]
    return {"ok_pct": round(100.0 * len(done) / len(attempts), 1) if attempts else None,
            "p50_ms": round(percentile(ms, 50), 1) if ms else None,
            "p99_ms": round(percentile(ms, 99), 1) if ms else None,
            "n": len(attempts), "n_forwarded": len(run["forwarded"]), "n_local": len(run["local"]),
            "reroutes": run["reroutes"], "decision_ms": run["decision_ms"],
            "blackhole_setup_ms": run["blackhole_setup_ms"]}


@click.command("reroute")
@click.option("--window", type=click.FloatRange(min=1), default=5.0, show_default=True,
              help="seconds of blackhole whose new connections count")
@click.option("--rate", type=click.FloatRange(min=1), default=10, show_default=True,
              help="new connections per second from each source")
@click.option("--connect-timeout", "timeout", type=click.FloatRange(min=0.5), default=5.0,
              show_default=True, help="a connection not established after this failed "
              "(5 s: Envoy's default connect timeout)")
@click.option("--json", "as_json", is_flag=True, help="(always JSON lines; for symmetry)")
def bench_reroute(window: float, rate: float, timeout: float, as_json: bool) -> None:
    """New TCP connections (forwarded and local) across a blackhole of the
    direct path, protective reroute on and off: completed %, p50/p99 connect
    time (namespace lab with GRE tunnels: needs the VM; root)."""
    from argoctl.lab import vm
    from argoctl.lab.topo import Topology

    if "gre" in vm.missing_features():
        raise click.ClickException("needs GRE (run it in the VM: python -m argoctl.lab.vm -- ...)")
    runs = {}
    cgroup = make_cgroup("brr")
    try:
        with tempfile.TemporaryDirectory() as tmp, Topology.default(f"abr{os.getpid()}") as t:
            t.start()
            lab = start_lab(t, tmp, cgroup)
            try:
                for mode in ("on", "off"):
                    if not steady(lab):
                        raise click.ClickException(f"lab not steady on direct before run {mode}")
                    set_reroute(lab, mode == "on")
                    runs[mode] = summary(blackhole_run(lab, window, rate, timeout))
            finally:
                lab.tcp.stop()
                lab.stop()
    finally:
        os.rmdir(cgroup)
    record = {"bench": "reroute", "kernel": vm.kernel_label(), "window_s": window,
              "rate_per_source": rate, "connect_timeout_s": timeout,
              "probe_interval_ms": 1000, "detect_multiplier": 3,
              "target": {"ok_pct_on": 100, "p99_ms_on_max": 1300}}
    for mode, r in runs.items():
        for k, v in r.items():
            record[f"{k}_{mode}"] = v
    emit(record)
