"""`argoctl lab ...`: the standard lab (client, edge, relay1, relay2, origin).

This module holds the command group; `lab up|down|status|impair|scenario` add
themselves here. The per-host configs come from argoctl/labconfig.py, shared by
the namespace lab, vagrant/provision.sh and the tests."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from typing import Optional

import click

from argoctl import keys, labconfig
from argoctl import topo as netns_topo


@click.group("lab")
def lab() -> None:
    """The standard lab: client, edge, two relays and an origin."""


@lab.command("gen-configs")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for <host>.toml and keys/ (created).")
@click.option("--tunnel", "kind", type=click.Choice(labconfig.TUNNEL_KINDS), default="gre",
              show_default=True)
@click.option("--underlay", type=click.Choice(labconfig.UNDERLAYS), default="netns",
              show_default=True, help="Network namespaces on this host, or the Vagrant VMs.")
@click.option("--host", "only", default=None,
              help="Write only this host's config and secrets (VM provisioning).")
@click.option("--lan-interface", default=None,
              help="The edge's client-facing interface, if not the underlay's default.")
@click.option("--seed-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="0600 file with a lab secret: keys derive from it, so hosts "
                   "generated separately agree.")
def gen_configs(out_dir: str, kind: str, underlay: str, only: str | None,
                lan_interface: str | None, seed_file: str | None) -> None:
    """Write every lab host's argoctl config (and WireGuard/responder keys)."""
    topo = labconfig.default_topology(underlay)
    if lan_interface:
        topo = labconfig.with_lan_interface(topo, lan_interface)
    try:
        seed = labconfig.read_seed(seed_file) if seed_file else None
        written = labconfig.write_lab_configs(out_dir, topo, kind, only=only, seed=seed)
    except (ValueError, OSError, keys.KeyFileError) as e:
        raise click.ClickException(str(e)) from None
    for host, path in written.items():
        click.echo(f"{host}: {path}")


# -- scenarios (argoctl/scenarios/*.toml) -----------------------------------------

SCENARIO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios")
DIRECTIONS = ("a->b", "b->a", "both")
_STEP_KEYS = {"at", "link", "direction", "delay", "jitter", "loss", "blackhole", "clear"}


@dataclass(frozen=True)
class Step:
    """At `at` seconds: impair (or restore) the link between a and b."""
    at: float
    a: str
    b: str
    direction: str = "both"
    delay: float = 0.0          # ms, each way
    jitter: float = 0.0         # ms
    loss: float = 0.0           # percent
    blackhole: bool = False
    clear: bool = False

    def describe(self) -> str:
        arrow = {"a->b": "->", "b->a": "<-", "both": "<->"}[self.direction]
        where = f"{self.a}{arrow}{self.b}"
        if self.clear:
            return f"{where} restored"
        if self.blackhole:
            return f"{where} blackholed"
        parts = [f"+{self.delay:g} ms" + (f" +-{self.jitter:g}" if self.jitter else "")] \
            if self.delay else []
        parts += [f"{self.loss:g}% loss"] if self.loss else []
        return f"{where} " + (", ".join(parts) or "unimpaired")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration: float
    steps: tuple[Step, ...]
    path: str = ""


def scenario_names() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(SCENARIO_DIR) if f.endswith(".toml"))


def load_scenario(name: str) -> Scenario:
    """A shipped scenario by name, or a scenario file by path. ValueError says what is wrong."""
    path = name if os.sep in name or name.endswith(".toml") else \
        os.path.join(SCENARIO_DIR, f"{name}.toml")
    if not os.path.exists(path):
        raise ValueError(f"no scenario {name!r} (shipped: {', '.join(scenario_names())})")
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: {e}") from None
    return parse_scenario(doc, path)


def parse_scenario(doc: dict, path: str = "<scenario>") -> Scenario:
    known_links = {frozenset(p) for p in netns_topo.MESH_PAIRS} | {frozenset(("edge", "client"))}
    duration = doc.get("duration")
    if not isinstance(duration, (int, float)) or duration <= 0:
        raise ValueError(f"{path}: duration must be a positive number of seconds")
    steps = []
    for i, s in enumerate(doc.get("step", []), 1):
        where = f"{path}: step {i}"
        unknown = set(s) - _STEP_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(_STEP_KEYS))})")
        link = s.get("link")
        if not (isinstance(link, list) and len(link) == 2 and frozenset(link) in known_links):
            raise ValueError(f"{where}: link must name two linked lab hosts, e.g. "
                             f"[\"edge\", \"origin\"] (got {link!r})")
        at = s.get("at")
        if not isinstance(at, (int, float)) or not 0 <= at <= duration:
            raise ValueError(f"{where}: at must be a number of seconds within the duration")
        step = Step(float(at), link[0], link[1], s.get("direction", "both"),
                    float(s.get("delay", 0)), float(s.get("jitter", 0)), float(s.get("loss", 0)),
                    bool(s.get("blackhole", False)), bool(s.get("clear", False)))
        if step.direction not in DIRECTIONS:
            raise ValueError(f"{where}: direction must be one of {', '.join(DIRECTIONS)}")
        if step.jitter and not step.delay:
            raise ValueError(f"{where}: jitter needs delay")
        if not 0 <= step.loss <= 100 or step.delay < 0 or step.jitter < 0:
            raise ValueError(f"{where}: delay/jitter must be >= 0 and loss within 0..100")
        steps.append(step)
    return Scenario(str(doc.get("name", os.path.basename(path)[:-5])),
                    str(doc.get("description", "")), float(duration),
                    tuple(sorted(steps, key=lambda st: st.at)), path)


# -- the running lab (one process: the edge daemon is a thread) --------------------

LAB_PREFIX = "argolab"        # `lab up`; `lab down` removes exactly argolab-*
DEMO_PREFIX = "argodemo"      # one-shot runs (demo, scenario): argodemo<pid>-*
LAB_STATE_DIR = "/run/argoctl-lab"
BASELINE = "baseline"         # a second client whose traffic argoctl does not steer
# The baseline client's link: inside the client LAN's /25, which origin and the
# relays already route to edge, and more specific than edge's /25 on to-client.
BASELINE_SUBNET = "198.51.100.120/30"
# Failover well under a second (the demo's requests retry after 250 ms), quick
# recovery so scenarios can follow each other.
POLICY = {"probe_interval_ms": 100, "detect_multiplier": 3, "probe_timeout_ms": 300,
          "hold_down_s": 4.0, "recover_probes": 3, "metrics_listen": ""}
# The lab's geography (one-way ms): a relay is a detour, so the direct path is
# the fastest while healthy and argoctl returns to it after an incident.
GEOGRAPHY = {("edge", "relay1"): 5.0, ("relay1", "origin"): 5.0,
             ("edge", "relay2"): 8.0, ("relay2", "origin"): 8.0}


class LabEnv:
    """The standard lab, running: topology (+ the baseline client), relays `up`,
    origin's responder, echo service and sink, edge's daemon in a thread.

    tunnels: "gre" (real tunnels: needs GRE), "none" (fwmark routes to the
    relays' links; the host kernel), "auto". Without netem the geography is
    skipped and only blackholes work (nftables)."""

    def __init__(self, prefix: str = LAB_PREFIX, tunnels: str = "auto",
                 policy: Optional[dict] = None, directory: Optional[str] = None):
        self.prefix, self.tunnels = prefix, tunnels
        self.policy = dict(POLICY if policy is None else policy)
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="argoctl-lab-")
        self.directory = directory or self._tmp.name
        self.topo = None
        self.loop = None
        self.echo = None
        self.netem = True
        self._base: dict[tuple[str, str], float] = {}

    def start(self) -> "LabEnv":
        from argoctl import bench_loop, labtraffic, vm
        from argoctl.topo import Topology
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
            self.loop = bench_loop.LoopLab(t, self.directory, self.policy, tunnels=self.tunnels)
            self.loop.start()
            self.echo = labtraffic.EchoServer(t["origin"])
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def daemon(self):
        return self.loop.daemon if self.loop else None

    def wait_settled(self, timeout: float = 30.0) -> bool:
        """Until edge uses direct and every path is up (after start or an incident)."""
        d = self.daemon
        return self.loop.wait_for(lambda: d.choices().get("origin") == "direct"
                                  and not d._doubt, timeout, 0.1)

    def impair(self, a: str, b: str, *, delay: float = 0, jitter: float = 0, loss: float = 0,
               blackhole: bool = False, direction: str = "both") -> None:
        self.topo.link(a, b).impair(delay_ms=delay, jitter_ms=jitter, loss_pct=loss, blackhole=blackhole,
                    direction=direction)

    def clear(self, a: str, b: str, direction: str = "both") -> None:
        """Back to the lab's geography."""
        base = self._base.get((a, b), self._base.get((b, a), 0.0))
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
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)} \
            if threading.current_thread() is threading.main_thread() else {}
        try:
            for x in (self.echo, self.loop):
                if x is not None:
                    try:
                        x.stop()
                    except Exception as e:     # keep tearing down
                        click.echo(f"argoctl lab: stopping {type(x).__name__}: {e}", err=True)
            self.echo = self.loop = None
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
         on_step=None, t0: Optional[float] = None) -> None:
    """Apply the scenario's steps at their times (from t0, default now), then wait
    out its duration and restore every link it touched."""
    t0 = time.monotonic() if t0 is None else t0
    stop = stop or threading.Event()
    touched = set()
    try:
        for step in scenario.steps:
            if stop.wait(max(0.0, t0 + step.at - time.monotonic())):
                return
            env.apply(step)
            touched.add((step.a, step.b))
            if on_step:
                on_step(step, time.monotonic() - t0)
        stop.wait(max(0.0, t0 + scenario.duration - time.monotonic()))
    finally:
        for a, b in touched:
            if env.topo is not None:
                env.clear(a, b)


def raise_on_sigterm() -> None:
    """SIGTERM unwinds like ^C, so every `finally` tears its part down."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
