"""`argoctl lab ...`: the standard lab (client, edge, relay1, relay2, origin).

This module holds the command group; `lab up|down|status|impair|scenario` add
themselves here. The per-host configs come from argoctl/labconfig.py, shared by
the namespace lab, vagrant/provision.sh and the tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
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
            self.echo = labtraffic.EchoServer(t["origin"], netns_topo.ORIGIN_SERVER[0])
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
    length. Returns when the scenario ended (monotonic)."""
    t0 = time.monotonic() if t0 is None else t0
    stop = stop or threading.Event()
    touched = set()
    slip = 0.0
    try:
        for step in scenario.steps:
            planned = t0 + step.at + slip
            if stop.wait(max(0.0, planned - time.monotonic())):
                return time.monotonic()
            env.apply(step)
            touched.add((step.a, step.b))
            slip += max(0.0, time.monotonic() - planned)
            if on_step:
                on_step(step, time.monotonic() - t0)
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


# -- `argoctl lab up|down|status|impair|scenario|demo` ------------------------------

def _state_file() -> str:
    return os.path.join(LAB_STATE_DIR, f"{LAB_PREFIX}.json")


def _read_lab() -> Optional[dict]:
    try:
        with open(_state_file()) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def _write_lab(doc: dict) -> None:
    os.makedirs(LAB_STATE_DIR, exist_ok=True)
    tmp = _state_file() + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, _state_file())


def _vm_or_here(argv: list[str]) -> None:
    from argoctl.demo import in_vm_or_here
    rc = in_vm_or_here(["lab", *argv])
    if rc is not None:
        sys.exit(rc)


def _pid_alive(pid) -> bool:
    from argoctl.daemon import pid_alive
    return pid_alive(pid)


def serve_lab(tunnels: str, ready_note=None) -> None:
    """`lab up --foreground`: the lab until SIGINT/SIGTERM, its description in lab.json."""
    raise_on_sigterm()
    env = LabEnv(LAB_PREFIX, tunnels=tunnels, directory=tempfile.mkdtemp(prefix="argoctl-lab-"))
    try:
        env.start()
        _write_lab({"pid": os.getpid(), "prefix": env.prefix, "tunnels": env.tunnels,
                    "netem": env.netem, "directory": env.directory,
                    "state_file": env.daemon.state_file, "base": [
                        [a, b, ms] for (a, b), ms in env._base.items()]})
        if ready_note:
            ready_note(env)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        env.stop()
        shutil.rmtree(env.directory, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_state_file())


@lab.command("up")
@click.option("--foreground", is_flag=True,
              help="Run in this process until ^C (always so inside the VM).")
@click.option("--tunnels", type=click.Choice(["auto", "gre", "none"]), default="auto",
              show_default=True)
def lab_up(foreground: bool, tunnels: str) -> None:
    """Bring up the standard lab in namespaces argolab-*: client and baseline
    (unsteered) behind edge, relay1, relay2, origin; edge runs argoctl (its
    generated config), the relays are `up` as relays, origin runs the responder
    and a UDP echo service on 203.0.113.10:9100.

    On a kernel without GRE/WireGuard/netem this runs inside the distribution-kernel
    VM (automatically); the lab then lives only as long as that one command.
    """
    from argoctl import vm
    if not os.environ.get("ARGOCTL_IN_VM") and vm.use_vm():
        click.echo("argoctl lab up: the lab will run inside the VM until ^C; `lab impair` "
                   "and `lab status` cannot reach it from here (use `lab scenario` or "
                   "`argoctl demo`).", err=True)
        _vm_or_here(["up", "--foreground", "--tunnels", tunnels])
    cur = _read_lab()
    if cur and _pid_alive(cur.get("pid")):
        raise click.ClickException(f"a lab is already up (pid {cur['pid']}): `argoctl lab down`")
    if foreground or os.environ.get("ARGOCTL_IN_VM"):
        serve_lab(tunnels, lambda env: click.echo(
            f"lab up: {env.prefix}-* (tunnels {env.tunnels}); ^C to tear it down", err=True))
        return
    os.makedirs(LAB_STATE_DIR, exist_ok=True)
    log_path = os.path.join(LAB_STATE_DIR, f"{LAB_PREFIX}.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "argoctl", "lab", "up", "--foreground",
                             "--tunnels", tunnels], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=log, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        doc = _read_lab()
        if doc and doc.get("pid") == proc.pid:
            click.echo(f"lab up: {LAB_PREFIX}-* (pid {proc.pid}); `argoctl lab status`, "
                       f"`argoctl lab down`")
            return
        if proc.poll() is not None:
            raise click.ClickException(f"lab up failed (exit {proc.returncode}); see {log_path}")
        time.sleep(0.2)
    proc.terminate()
    raise click.ClickException(f"lab up: not ready after 120 s; see {log_path}")


@lab.command("down")
def lab_down() -> None:
    """Tear the lab down: its process, namespaces argolab-* (and those of
    interrupted one-shot runs, argodemo<pid>-*), pinned maps. Safe to repeat."""
    doc = _read_lab()
    ours = [n for n in netns_topo.list_namespaces() if n.startswith(LAB_PREFIX + "-")]
    if doc and _pid_alive(doc.get("pid")):
        os.kill(doc["pid"], signal.SIGTERM)
        end = time.monotonic() + 30
        while _pid_alive(doc["pid"]) and time.monotonic() < end:
            time.sleep(0.2)
        if _pid_alive(doc["pid"]):
            os.kill(doc["pid"], signal.SIGKILL)
    removed = sorted(set(ours + netns_topo.cleanup_stale(LAB_PREFIX)))
    for ns in netns_topo.list_namespaces():
        m = re.fullmatch(rf"({DEMO_PREFIX}(\d+))-\w+", ns)
        if m and not _pid_alive(int(m.group(2))):
            removed += netns_topo.cleanup_stale(m.group(1))
    for ns in removed:
        shutil.rmtree(f"/sys/fs/bpf/argoctl-{ns}", ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_state_file())
    click.echo(f"lab down: removed {len(removed)} namespaces" if removed else
               "lab down: nothing was up")


def _running_lab() -> dict:
    doc = _read_lab()
    if not doc or not _pid_alive(doc.get("pid")):
        from argoctl import vm
        hint = " (this kernel runs the lab only inside the VM, for one command: use " \
               "`argoctl lab scenario` or `argoctl demo`)" if vm.use_vm() else ""
        raise click.ClickException(f"no lab is up: `argoctl lab up`{hint}")
    return doc


@lab.command("status")
@click.option("--json", "as_json", is_flag=True)
def lab_status(as_json: bool) -> None:
    """The lab's hosts and edge's live choice per destination (from its state file)."""
    doc = _running_lab()
    from argoctl.daemon import read_state
    try:
        state = read_state(doc["state_file"])
    except (FileNotFoundError, ValueError):
        state = {"destinations": {}}
    hosts = [n for n in netns_topo.list_namespaces() if n.startswith(doc["prefix"] + "-")]
    if as_json:
        click.echo(json.dumps({"lab": doc, "namespaces": hosts,
                               "destinations": state["destinations"]}, sort_keys=True))
        return
    click.echo(f"lab {doc['prefix']} (pid {doc['pid']}, tunnels {doc['tunnels']}): "
               f"{', '.join(hosts)}")
    for name, d in state["destinations"].items():
        click.echo(f"  {name}: via {d.get('choice')} ({d.get('reason', '')})")
        for p, v in d.get("paths", {}).items():
            rtt = "-" if v.get("rtt_ms") is None else f"{v['rtt_ms']:.1f} ms"
            click.echo(f"    {p:<8} {v['state']:<8} rtt {rtt:>9}  loss {v['loss'] or 0:.0%}  "
                       f"weight {v['weight']}")


@lab.command("impair")
@click.argument("a")
@click.argument("b")
@click.option("--delay", type=click.FloatRange(min=0), default=0, help="ms, each way")
@click.option("--jitter", type=click.FloatRange(min=0), default=0, help="ms")
@click.option("--loss", type=click.FloatRange(0, 100), default=0, help="percent")
@click.option("--blackhole", is_flag=True, help="drop everything")
@click.option("--direction", type=click.Choice(DIRECTIONS), default="both", show_default=True,
              help="a->b: only what A sends to B")
@click.option("--clear", is_flag=True, help="back to the lab's normal latency")
def lab_impair(a, b, delay, jitter, loss, blackhole, direction, clear) -> None:
    """Impair the link between lab hosts A and B (netem; e.g. `lab impair edge origin
    --blackhole`). Replaces the link's previous impairment in that direction."""
    doc = _running_lab()
    if frozenset((a, b)) not in {frozenset(p) for p in netns_topo.MESH_PAIRS}:
        raise click.ClickException(f"no lab link {a} - {b} (links: " + ", ".join(
            f"{x}-{y}" for x, y in netns_topo.MESH_PAIRS) + ")")
    if jitter and not delay:
        raise click.ClickException("--jitter needs --delay")
    # A description of the running lab (not started: nothing is created).
    env = LabEnv(doc["prefix"], tunnels=doc["tunnels"], directory=doc["directory"])
    env.topo = netns_topo.Topology.default(doc["prefix"])
    env.netem = doc["netem"]
    env._base = {(x, y): ms for x, y, ms in doc["base"]}
    link = env.topo.link(a, b)
    for end in link._ends(direction):     # whatever a previous command left
        for kind in ("netem", "nft"):
            end.impaired = {kind}
            with contextlib.suppress(netns_topo.TopologyError):
                link._clear_end(end)
        end.impaired = set()
    try:
        if clear:
            env.clear(a, b, direction)
        else:
            env.impair(a, b, delay=delay, jitter=jitter, loss=loss, blackhole=blackhole,
                       direction=direction)
    except netns_topo.TopologyError as e:
        raise click.ClickException(str(e)) from None
    step = Step(0, a, b, direction, delay, jitter, loss, blackhole, clear)
    click.echo(f"lab impair: {step.describe()}")


@lab.command("scenario")
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the shipped scenarios.")
@click.option("--rate", type=click.FloatRange(min=1, max=500), default=25.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--live/--plain", default=None)
def lab_scenario(name, list_, rate, as_json, live) -> None:
    """Play a scenario (shipped name or a .toml file). With a lab up (`lab up`),
    its steps are applied to that lab; otherwise a one-shot run: lab up, traffic
    from client (argoctl) and baseline (direct-only), the scenario, a summary, lab down.

    On a kernel without GRE/WireGuard/netem this runs inside the distribution-kernel
    VM (automatically); the lab then lives only as long as that one command.
    """
    if list_ or not name:
        for n in scenario_names():
            click.echo(f"{n:<14} {load_scenario(n).description}")
        return
    try:
        sc = load_scenario(name)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if os.path.exists(name):
        name = os.path.abspath(name)      # the VM runs in the repository
    doc = _read_lab()
    if doc and _pid_alive(doc.get("pid")):
        env = LabEnv(doc["prefix"], tunnels=doc["tunnels"], directory=doc["directory"])
        env.topo = netns_topo.Topology.default(doc["prefix"])
        env.netem = doc["netem"]
        env._base = {(x, y): ms for x, y, ms in doc["base"]}
        click.echo(f"lab scenario {sc.name}: {sc.description} ({sc.duration:g} s)")
        play(env, sc, on_step=lambda st, at: click.echo(f"  t={at:5.1f}s {st.describe()}"))
        return
    from argoctl.demo import run_and_report
    argv = ["scenario", name, "--rate", str(rate)] + (["--json"] if as_json else []) + \
        ([] if live is None else ["--live" if live else "--plain"])
    if live is None and sys.stderr.isatty():
        argv.append("--live")
    _vm_or_here(argv)
    run_and_report([name], rate, as_json, "auto", live)


@lab.command("demo")
@click.pass_context
def lab_demo(ctx) -> None:
    """The same as `argoctl demo` (with its defaults)."""
    from argoctl.demo import demo
    ctx.invoke(demo, scenarios=(), rate=25.0, as_json=False, live=None, tunnels="auto")
