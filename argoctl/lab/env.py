"""The standard lab, running (LabEnv), and playing a scenario on it."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from typing import Optional

import click

from argoctl.lab import topo as netns_topo
from argoctl.lab.configs import RELAYS
from argoctl.lab.scenario import Scenario, Step

# -- the running lab (one process: the edge daemon is a thread) --------------------

# `lab up`; `lab down` removes exactly argolab-* (tests use their own prefix)
LAB_PREFIX = os.environ.get("ARGOCTL_LAB_PREFIX", "argolab")
DEMO_PREFIX = "argodemo"      # one-shot runs (demo, scenario): argodemo<pid>-*
LAB_STATE_DIR = "/run/argoctl-lab"
BASELINE = "baseline"         # a second client whose traffic argoctl does not steer
# The baseline client's link: inside the client LAN's /25, which origin and the
# relays already route to edge, and more specific than edge's /25 on to-client.
BASELINE_SUBNET = "198.51.100.120/30"
# Failover in about a second even in a busy TCG VM (a probe interval much
# shorter turns a starved VM's late replies into false failures), quick
# recovery so scenarios can follow each other.
POLICY = {"probe_interval_ms": 200, "detect_multiplier": 3, "probe_timeout_ms": 500,
          "hold_down_s": 4.0, "recover_probes": 3, "metrics_listen": ""}
# The lab's geography (one-way ms): a relay is a detour, so the direct path is
# the fastest while healthy and argoctl returns to it after an incident.
GEOGRAPHY = {("edge", "relay1"): 5.0, ("relay1", "origin"): 5.0,
             ("edge", "relay2"): 8.0, ("relay2", "origin"): 8.0}
# Fleet mode, for a scenario with `fleet = true` only (LabEnv.set_fleet: the
# lab starts without it, outage and brownout play as without fleet mode): a
# nats-server in namespace "bus", linked to edge, relay1 and relay2; every host
# publishes every 500 ms; k = 1: the edge probes direct and one relay end to
# end and scores the other from the bus. With real tunnels, relay2's are
# WireGuard in fleet mode (relay1's stay GRE): the fleet runs over both kinds.
BUS_LOOPBACK = "192.0.2.5"
BUS_SUBNETS = ("192.0.2.96/30", "192.0.2.100/30", "192.0.2.104/30")
FLEET = {"publish_interval_ms": 500, "ttl_s": 5, "alternatives": 1}
FLEET_TUNNELS = {"relay2": "wireguard"}


class LabEnv:
    """The standard lab, running: topology (+ the baseline client), relays `up`,
    origin's responder, echo service and sink, edge's daemon in a thread;
    set_fleet(True) switches it to fleet mode (FLEET), set_fleet(False) back.

    tunnels: "gre" (real tunnels: needs GRE), "none" (fwmark routes to the
    relays' links; the host kernel), "auto". Without netem the geography is
    skipped and only blackholes work (nftables)."""

    def __init__(self, prefix: str = LAB_PREFIX, tunnels: str = "auto",
                 policy: Optional[dict] = None, directory: Optional[str] = None):
        self.prefix, self.tunnels, self.fleet = prefix, tunnels, False
        self.nats = None
        self.timings: dict = {}        # what switching to fleet mode took (s)
        self.relay_datapaths: dict = {}   # relay -> did its daemon adopt or compile its datapath
        self.policy = dict(POLICY if policy is None else policy)
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="argoctl-lab-")
        self.directory = directory or self._tmp.name
        self.topo = None
        self.loop = None
        self.echo = None
        self.netem = True
        self._base: dict[tuple[str, str], float] = {}

    def start(self) -> "LabEnv":
        from argoctl.lab import loop
        from argoctl.lab import traffic as labtraffic
        from argoctl.lab import vm
        from argoctl.lab.topo import Topology
        missing = vm.missing_features()
        if self.tunnels == "auto":
            self.tunnels = "none" if "gre" in missing else "gre"
        self.netem = "netem" not in missing
        try:
            t = self.topo = Topology.default(self.prefix)
            base = t.add_host(BASELINE)
            t.add_link(t["edge"], base, subnet=BASELINE_SUBNET)
            t.add_route(base, "default", via=t["edge"])
            t.start()
            if self.netem:
                for (a, b), ms in GEOGRAPHY.items():
                    self._base[(a, b)] = ms
                    t.link(a, b).impair(delay_ms=ms)
            self.loop = loop.LoopLab(t, self.directory, self.policy, tunnels=self.tunnels,
                                     responder_process=True)
            self.loop.start()
            # the interface each request arrives on (which relay it took)
            self.echo = labtraffic.EchoServer(t["origin"], netns_topo.ORIGIN_SERVER[0],
                                              ingress=True)
        except BaseException:
            self.stop()
            raise
        return self

    def set_fleet(self, on: bool) -> None:
        """Fleet mode on: the bus namespace (once), nats-server in it, every
        host's config with [fleet], relay2's tunnels WireGuard (tunnels="gre"),
        the relays' daemons, the edge's daemon reloaded. Off: the reverse (the
        bus namespace stays, idle). `timings` says what switching on took
        (relay_agents_s: the relays' daemons, relay_compile_s of it their
        datapaths, compiled side by side before the daemons start)."""
        if on == self.fleet:
            return
        if not on:
            self.loop.leave_fleet()
            self.nats.stop()
            self.nats, self.fleet = None, False
            return
        from argoctl.lab.fleet import add_bus
        from argoctl.lab.nats import NatsFleet
        t, started = self.topo, time.monotonic()
        if "bus" not in t.hosts:
            add_bus(t, ("edge", *RELAYS), BUS_LOOPBACK, iter(BUS_SUBNETS))
        self.nats = NatsFleet(("edge", *RELAYS), ttl_s=FLEET["ttl_s"],
                              netns=t["bus"].netns, address=BUS_LOOPBACK).start()
        self.timings = {"nats_s": round(time.monotonic() - started, 1)}
        self.fleet = True          # (stop() tears down whatever of it started)
        self.loop.enter_fleet(self.nats, FLEET, FLEET_TUNNELS if self.tunnels == "gre" else None)
        self.timings.update(relay_agents_s=self.loop.relay_start_s,
                            relay_compile_s=self.loop.relay_compile_s,
                            edge_reload_s=self.loop.reload_s,
                            total_s=round(time.monotonic() - started, 1))
        self.relay_datapaths = dict(self.loop.relay_datapaths)

    def tunnel_kinds(self) -> dict[str, str]:
        """The edge's tunnel devices as its kernel has them: peer -> kind."""
        from argoctl import names
        with self.topo["edge"].ipr() as ipr:
            links = ipr.get_links()
        out = {}
        for link in links:
            name, info = link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_LINKINFO")
            if name.startswith(names.LINK_PREFIX) and info is not None:
                out[name[len(names.LINK_PREFIX):]] = info.get_attr("IFLA_INFO_KIND")
        return out

    @property
    def daemon(self):
        return self.loop.daemon if self.loop else None

    def wait_settled(self, timeout: float = 30.0) -> bool:
        """Until edge uses direct and every path it probes is up (after start or an
        incident); in fleet mode also until its agent is on the bus and holds
        every relay's leg to the origin."""
        d = self.daemon

        def fleet_ready() -> bool:
            if d.fleet is None:
                return True
            legs = [d.fleet.view.leg(r, "origin", time.time()) for r in RELAYS]
            return d.fleet.mode == "fleet" and all(legs)
        return self.loop.wait_for(lambda: d.choices().get("origin") == "direct"
                                  and not d._doubt and fleet_ready(), timeout, 0.1)

    def impair(self, a: str, b: str, *, delay: float = 0, jitter: float = 0, loss: float = 0,
               blackhole: bool = False, direction: str = "both") -> None:
        self.topo.link(a, b).impair(delay_ms=delay, jitter_ms=jitter, loss_pct=loss, blackhole=blackhole,
                    direction=direction)

    def base_delay(self, a: str, b: str) -> float:
        """The lab's geography on a-b: ms each way (0: none)."""
        return self._base.get((a, b), self._base.get((b, a), 0.0))

    def netem_of(self, step: Step) -> dict:
        """The netem parameters `step` leaves on its link, as `apply` sets them
        (all zero: no netem), for argoctl.lab.faults."""
        if step.clear:
            return {"delay_ms": self.base_delay(step.a, step.b), "jitter_ms": 0, "loss_pct": 0}
        return {"delay_ms": step.delay, "jitter_ms": step.jitter,
                "loss_pct": 100 if step.blackhole else step.loss}

    def clear(self, a: str, b: str, direction: str = "both") -> None:
        """Back to the lab's geography."""
        base = self.base_delay(a, b)
        if base:
            self.topo.link(a, b).impair(delay_ms=base, direction=direction)
        else:
            self.topo.link(a, b).clear(direction)

    def apply(self, step: Step) -> None:
        if step.clear:
            self.clear(step.a, step.b, step.direction)
        else:
            self.impair(step.a, step.b, delay=step.delay, jitter=step.jitter, loss=step.loss,
                        blackhole=step.blackhole, direction=step.direction)

    def clear_all(self) -> None:
        for a, b in netns_topo.MESH_PAIRS:
            self.clear(a, b)

    def stop(self) -> None:
        """Everything down; idempotent, and not interruptible by a second ^C."""
        old = {s: signal.signal(s, _handler(None)) for s in (signal.SIGINT, signal.SIGTERM)} \
            if threading.current_thread() is threading.main_thread() else {}
        try:
            for x in (self.echo, self.loop):
                if x is not None:
                    try:
                        x.stop()
                    except Exception as e:     # keep tearing down
                        click.echo(f"argoctl lab: stopping {type(x).__name__}: {e}", err=True)
            self.echo = self.loop = None
            if self.nats is not None:
                self.nats.stop()
                self.nats = None
            if self.topo is not None:
                self.topo.stop()
                self.topo = None
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def play(env: LabEnv, scenario: Scenario, stop: Optional[threading.Event] = None,
         on_step=None, t0: Optional[float] = None) -> float:
    """Apply the scenario's steps at their times (from t0, default now), then wait
    out its duration and restore every link it touched. A step that takes long
    to apply (a busy VM) delays the later ones as much, so every phase keeps its
    length. on_step(step, seconds since t0) is called as a step begins, before
    `tc` applies it: in the VM that takes seconds, and the link is impaired (and
    the daemon may react) before it returns. Returns when the scenario ended."""
    t0 = time.monotonic() if t0 is None else t0
    stop = stop or threading.Event()
    touched = set()
    slip = 0.0
    try:
        for step in scenario.steps:
            planned = t0 + step.at + slip
            if stop.wait(max(0.0, planned - time.monotonic())):
                return time.monotonic()
            if on_step:       # as it begins: it may take effect before apply returns
                on_step(step, time.monotonic() - t0)
            env.apply(step)
            touched.add((step.a, step.b))
            slip += max(0.0, time.monotonic() - planned)
        stop.wait(max(0.0, t0 + scenario.duration + slip - time.monotonic()))
        return time.monotonic()
    finally:
        for a, b in touched:
            if env.topo is not None:
                env.clear(a, b)


def _handler(exc):
    """A signal handler for this process that raises `exc` (None: ignores the
    signal). A forked child (pyroute2 forks one per namespace socket and stops it
    with SIGTERM) inherits the handler: there it exits at once, so the child
    never unwinds a copy of our stack through our `finally` clauses."""
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            os._exit(128 + signum)
        if exc is not None:
            raise exc
    return handler


def raise_on_sigterm() -> None:
    """SIGTERM unwinds like ^C, so every `finally` tears its part down (and ^C
    reaching forked helpers in our process group only ends them)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler(KeyboardInterrupt))


