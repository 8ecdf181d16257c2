"""`argoctl lab ...`: the standard lab (client, edge, relay1, relay2, origin).

This module holds the command group; `lab up|down|status|impair|scenario` add
themselves here. The per-host configs come from argoctl/lab/configs.py, shared by
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
from typing import Optional

import click

from argoctl import keys
from argoctl.lab import configs as labconfig
from argoctl.lab import topo as netns_topo
from argoctl.lab.env import DEMO_PREFIX, LAB_PREFIX, LAB_STATE_DIR, LabEnv, play, raise_on_sigterm
from argoctl.lab.scenario import DIRECTIONS, Step, load_scenario, scenario_names


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


# -- `argoctl lab up|down|status|impair|scenario|demo` ------------------------------

def _state_file() -> str:
    return os.path.join(LAB_STATE_DIR, f"{LAB_PREFIX}.json")


def _read_lab() -> Optional[dict]:
    from argoctl import runfiles
    try:
        return runfiles.read_json(_state_file(), lambda d: runfiles.shape(
            d, {"pid": (int,), "prefix": (str,), "tunnels": (str,), "state_file": (str,)}))
    except FileNotFoundError:
        return None
    except runfiles.RunFileError as e:   # said: the lab's process is then not known
        click.echo(f"argoctl lab: warning: {e}: taken as no lab running", err=True)
        return None


def _write_lab(doc: dict) -> None:
    from argoctl import runfiles
    runfiles.write_json(_state_file(), doc)


def _vm_or_here(argv: list[str]) -> None:
    from argoctl.lab.demo import in_vm_or_here
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
    from argoctl.lab import vm
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
    from argoctl import home
    for ns in removed:      # (the namespace is gone: home names its pins by name)
        shutil.rmtree(home.pin_dir(ns), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_state_file())
    click.echo(f"lab down: removed {len(removed)} namespaces" if removed else
               "lab down: nothing was up")


def _running_lab() -> dict:
    doc = _read_lab()
    if not doc or not _pid_alive(doc.get("pid")):
        from argoctl.lab import vm
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
    except FileNotFoundError:
        state = {"destinations": {}}
    except ValueError as e:        # damaged: said, not shown as no destinations
        click.echo(f"argoctl lab status: {e}: no live choices shown", err=True)
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
    from argoctl.lab.demo import run_and_report
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
    from argoctl.lab.demo import demo
    ctx.invoke(demo, scenarios=(), rate=25.0, as_json=False, live=None, tunnels="auto")
