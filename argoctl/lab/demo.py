"""`argoctl demo` / `make demo`: the standard lab, scenarios, argoctl against direct-only.

Two clients send the same request/response traffic (argoctl/lab/traffic.py) to
the origin at the same rate, at the same time, through the same edge and the
same impaired links: `client` sits on edge's steered LAN (argoctl picks the
path), `baseline` on an interface argoctl does not steer (always direct). For
each scenario the summary compares them over the scenario's window:
"requests saved" = answered with argoctl - answered direct-only, "latency
saved" = direct-only's median - argoctl's median.

With a terminal the run shows a live rich view; without one, a plain line every
few seconds (stderr). `--json` prints the summary as one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Optional

import click

from argoctl.lab import env as labmod
from argoctl.lab import scenario as scenmod
from argoctl.lab import topo as netns_topo

DEST = "origin"
# The lab switches to fleet mode for a `fleet = true` scenario only (and back for
# a later one without): outage and brownout measure the single-host tool.
DEFAULT_SCENARIOS = ("outage", "brownout", "fleet")
DEFAULT_RATE = 20.0          # requests per second per client
DEADLINE_S = 2.0             # a request unanswered for this long failed
PLAIN_EVERY_S = 3.0
RECENT_S = 3.0


class Recorder:
    """Scenario bookkeeping shared by the live view and the summary."""

    def __init__(self, env: labmod.LabEnv, steered, baseline):
        self.env, self.steered, self.baseline = env, steered, baseline
        self.scenario: Optional[scenmod.Scenario] = None
        self.t0 = 0.0
        self.steps: list[tuple[float, str]] = []
        self.cleared = False
        self.fleet_doc: Optional[dict] = None
        self.fleet_before: Optional[dict] = None

    def begin(self, scenario: scenmod.Scenario) -> None:
        self.scenario, self.t0, self.steps = scenario, time.monotonic(), []
        self.cleared, self.fleet_doc, self.fleet_before = False, None, None

    def on_step(self, step: scenmod.Step, at: float) -> None:
        self.steps.append((at, step.describe()))
        self.cleared = self.cleared or step.clear

    def sample(self) -> None:
        """A fleet scenario: the edge's view of the fleet before the first
        impairment and while the impairments hold (the last sample of each goes
        into the summary)."""
        d = self.env.daemon
        if not self.scenario.fleet or self.cleared or d is None or d.fleet is None:
            return
        try:
            doc = d.fleet.status_doc(time.monotonic())
        except RuntimeError:        # the daemon's loop changed a dict meanwhile: next time
            return
        if self.steps:
            self.fleet_doc = doc
        else:
            self.fleet_before = doc

    def switches(self, since: Optional[float] = None) -> list:
        since = self.t0 if since is None else since
        return [r for r in list(self.env.daemon.history) if r.at >= since and r.dest == DEST
                and r.previous is not None and r.previous != r.choice]

    def paths(self) -> tuple[Optional[str], dict]:
        from argoctl.daemon import decision_doc
        dec = self.env.daemon.engine.last(DEST)
        if dec is None:
            return None, {}
        return dec.choice, decision_doc(dec, 0.0, None)["paths"]


# -- the live view -------------------------------------------------------------------

def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1f}%"


def render(rec: Recorder):
    """The rich renderable for one frame."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text
    sc = rec.scenario
    t = time.monotonic() - rec.t0
    head = Text.assemble(("argoctl demo  ", "bold"), (f"{sc.name}", "bold cyan"),
                         f"  {sc.description}  ", (f"t={t:4.1f}/{sc.duration:g}s", "bold"))
    choice, paths = rec.paths()
    pt = Table(title=f"destination {DEST} ({netns_topo.ORIGIN_PREFIX[0]}): "
                     f"via [bold green]{choice or '?'}[/]", title_justify="left")
    for col in ("path", "state", "rtt", "jitter", "loss", "weight"):
        pt.add_column(col, justify="left" if col in ("path", "state") else "right")
    for name, p in paths.items():
        style = {"up": "green", "suspect": "yellow"}.get(p["state"], "red")
        pt.add_row(("* " if name == choice else "  ") + name, f"[{style}]{p['state']}[/]",
                   _ms(p["rtt_ms"]), _ms(p["jitter_ms"]),
                   "-" if p["loss"] is None else f"{p['loss']:.0%}", str(p["weight"]))
    tt = Table(title=f"traffic (requests answered within {DEADLINE_S:g} s)", title_justify="left")
    for col in ("", f"last {RECENT_S:g}s ok", "median", "scenario ok", "median "):
        tt.add_column(col, justify="right")
    for label, c in (("argoctl", rec.steered), ("direct-only", rec.baseline)):
        r, s = c.recent(RECENT_S), c.stats(rec.t0)
        tt.add_row(label, _pct(r.success_pct), _ms(r.median_ms), _pct(s.success_pct),
                   _ms(s.median_ms))
    ev = Table.grid(padding=(0, 1))
    events = [(at, f"step: {d}") for at, d in rec.steps]
    events += [(r.at - rec.t0, f"[bold]switch {r.previous} -> {r.choice}[/]: {r.reason}")
               for r in rec.switches()]
    for at, text in sorted(events)[-6:]:
        ev.add_row(f"{at:5.1f}s", text)
    return Group(head, pt, tt, ev)


def plain_line(rec: Recorder) -> str:
    choice, paths = rec.paths()
    p = " ".join(f"{n}={v['state']}/{_ms(v['rtt_ms'])}/{(v['loss'] or 0):.0%}"
                 for n, v in paths.items())
    a, b = rec.steered.recent(RECENT_S), rec.baseline.recent(RECENT_S)
    return (f"[{rec.scenario.name} t={time.monotonic() - rec.t0:4.1f}s] via {choice} | {p} | "
            f"argoctl {_pct(a.success_pct)} {_ms(a.median_ms)} | "
            f"direct-only {_pct(b.success_pct)} {_ms(b.median_ms)}")


class View:
    """Live rich view on a terminal; plain periodic lines otherwise (stderr)."""

    def __init__(self, rec: Recorder, live: bool):
        from rich.console import Console
        self.rec, self.console = rec, Console(stderr=True, force_terminal=live or None)
        self.live_mode = live
        self._live = None
        self._seen_steps = 0
        self._seen_switch = 0.0

    def __enter__(self):
        if self.live_mode:
            from rich.live import Live
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.__exit__(*exc)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def watch(self, done: threading.Event) -> None:
        """Refresh until `done` (the scenario has played)."""
        next_plain = 0.0
        while not done.wait(0.25):
            self.rec.sample()
            if self._live is not None:
                self._live.update(render(self.rec))
                continue
            for at, d in self.rec.steps[self._seen_steps:]:
                self.message(f"[{self.rec.scenario.name} t={at:4.1f}s] step: {d}")
            self._seen_steps = len(self.rec.steps)
            for r in self.rec.switches(max(self.rec.t0, self._seen_switch)):
                self.message(f"[{self.rec.scenario.name} t={r.at - self.rec.t0:4.1f}s] switch "
                             f"{r.previous} -> {r.choice}: {r.reason}")
                self._seen_switch = r.at + 1e-6
            if time.monotonic() >= next_plain:
                self.message(plain_line(self.rec))
                next_plain = time.monotonic() + PLAIN_EVERY_S
        if self._live is not None:
            self._live.update(render(self.rec))


# -- the run ---------------------------------------------------------------------------

def scenario_result(rec: Recorder, scenario: scenmod.Scenario, t0: float,
                    until: float) -> dict:
    a = rec.steered.stats(t0, until)
    b = rec.baseline.stats(t0, until)
    lat_saved = None if a.median_ms is None or b.median_ms is None \
        else round(b.median_ms - a.median_ms, 2)
    return {"description": scenario.description, "duration_s": round(until - t0, 1),
            "argoctl": a.to_dict(), "direct_only": b.to_dict(),
            "requests_saved": a.ok - b.ok, "latency_saved_ms": lat_saved,
            "switches": [{"at_s": round(r.at - t0, 2), "from": r.previous, "to": r.choice,
                          "reason": r.reason} for r in rec.switches(t0) if r.at < until],
            # what the edge's daemon ran (not what the scenario asked for)
            "mode": "local" if rec.env.daemon.fleet is None else "fleet",
            **({"fleet": fleet_result(rec, t0)} if scenario.fleet else {})}


def fleet_result(rec: Recorder, t0: float) -> dict:
    """A fleet scenario while impaired: the members, who reached the origin (their
    own legs, from the bus), how the edge reached it on each path (measured end
    to end or composed from the bus), the path it used, and how long after the
    first impairment the first request arrived at the origin through it."""
    doc = rec.fleet_doc or {}
    paths = doc.get("paths", {}).get(DEST, {})
    via = next((p for p, r in paths.items() if r.get("chosen")), None)
    reach_s = moved = None
    if via and via != "direct" and rec.steps and rec.env.echo is not None:
        start = t0 + rec.steps[0][0]
        moved = next((r for r in rec.switches(start) if r.choice == via), None)
        first = None if moved is None else next(
            (at for at, _, _, ifname in list(rec.env.echo.seen)
             if at >= moved.at and ifname == f"to-{via}"), None)
        reach_s = None if first is None else round(first - start, 2)
    before = (rec.fleet_before or {}).get("paths", {}).get(DEST, {})
    # how the edge knew `via` when it moved there: "unknown" = scored from the bus only
    return {"members": {h: m["role"] for h, m in doc.get("members", {}).items()},
            "tunnels": rec.env.tunnel_kinds(),
            # before the first impairment: which paths the edge probed end to end,
            # and which it scored from the bus ("composed": relay's leg + hop)
            "edge_paths_before": {p: {k: r.get(k) for k in ("how", "state", "probed", "chosen")}
                                  for p, r in before.items()},
            "via_tier_at_switch": None if moved is None else moved.tiers.get(via),
            "reach": {h: r["state"] for h, r in doc.get("reach", {}).get(DEST, {}).items()},
            "edge_paths": {p: {k: r.get(k) for k in ("how", "state", "probed", "chosen")}
                           for p, r in paths.items()},
            "via": via, "reach_s": reach_s}


def run_demo(scenarios=DEFAULT_SCENARIOS, *, rate: float = DEFAULT_RATE, tunnels: str = "auto",
             live: Optional[bool] = None, prefix: Optional[str] = None,
             settle_timeout: float = 60.0) -> dict:
    """Bring the lab up, play `scenarios` under traffic, tear everything down;
    returns the summary (see scenario_result)."""
    from argoctl.lab.loop import ORIGIN
    from argoctl.lab.vm import kernel_label
    from argoctl.lab.traffic import RequestClient
    loaded = [scenmod.load_scenario(s) for s in scenarios]      # bad names fail before set-up
    live = sys.stderr.isatty() if live is None else live
    env = labmod.LabEnv(prefix or f"{labmod.DEMO_PREFIX}{os.getpid()}", tunnels=tunnels)
    clients = []
    from rich.console import Console
    say = Console(stderr=True).print
    started = time.monotonic()
    try:
        say(f"argoctl demo: bringing up the lab ({env.prefix}-*)...", highlight=False)
        env.start()
        if not env.wait_settled(settle_timeout):
            raise click.ClickException("the lab did not settle on the direct path with every "
                                       "path up in time")
        steered = RequestClient(env.topo["client"], ORIGIN, rate=rate, client_id=1,
                                deadline=DEADLINE_S)
        baseline = RequestClient(env.topo[labmod.BASELINE], ORIGIN, rate=rate, client_id=2,
                                 deadline=DEADLINE_S)
        clients = [steered, baseline]
        time.sleep(2.0)       # both clients running before the first window opens
        rec = Recorder(env, steered, baseline)
        results = {}
        fleet_setup: dict = {}
        for sc in loaded:
            if sc.fleet != env.fleet:
                say(f"argoctl demo: fleet mode {'on' if sc.fleet else 'off'} for {sc.name}"
                    + (": nats-server in the lab, the relays' agents, edge reloads its config"
                       if sc.fleet else ": edge reloads its config without [fleet]"),
                    highlight=False)
                env.set_fleet(sc.fleet)
                if sc.fleet and not fleet_setup:     # the first switch: what it took
                    fleet_setup = {"fleet_setup_s": dict(env.timings),
                                   "relay_datapaths": dict(env.relay_datapaths)}
            if not env.wait_settled(settle_timeout):
                say(f"argoctl demo: warning: not back on direct before {sc.name}", highlight=False)
            rec.begin(sc)
            done = threading.Event()
            err: list[BaseException] = []

            ended: list[float] = []

            def player(sc=sc, t0=rec.t0):
                try:
                    ended.append(labmod.play(env, sc, on_step=rec.on_step, t0=t0))
                except BaseException as e:      # surfaced below
                    err.append(e)
                finally:
                    done.set()
            th = threading.Thread(target=player, name="scenario", daemon=True)
            with View(rec, live) as view:
                if not live:
                    view.message(f"argoctl demo: scenario {sc.name}: {sc.description}")
                th.start()
                view.watch(done)
            th.join()
            if err:
                raise err[0]
            time.sleep(steered.deadline + 0.2)   # the window's last requests finish
            results[sc.name] = scenario_result(rec, sc, rec.t0, ended[0])
        return {"demo": "summary", "kernel": kernel_label(), "tunnels": env.tunnels,
                "rate_per_s": rate, "wall_s": round(time.monotonic() - started, 1),
                **fleet_setup,
                "scenarios": results}
    finally:
        for c in clients:
            c.stop()
        env.stop()


def summary_table(summary: dict):
    from rich.table import Table
    t = Table(title="argoctl vs direct-only (same lab, same time, same links)")
    for col in ("scenario", "requests", "ok argoctl", "ok direct", "requests saved",
                "median argoctl", "median direct", "latency saved", "p95 argoctl",
                "p95 direct", "switches"):
        t.add_column(col, justify="left" if col == "scenario" else "right")
    for name, r in summary["scenarios"].items():
        a, b = r["argoctl"], r["direct_only"]
        t.add_row(name, f"{a['requests']}/{b['requests']}", _pct(a["success_pct"]),
                  _pct(b["success_pct"]), str(r["requests_saved"]), _ms(a["median_ms"]),
                  _ms(b["median_ms"]), _ms(r["latency_saved_ms"]), _ms(a["p95_ms"]),
                  _ms(b["p95_ms"]), str(len(r["switches"])))
    return t


def fleet_tables(summary: dict) -> list:
    """Per fleet scenario: each member, whether it reached the origin while
    impaired, and how the edge used it."""
    from rich.table import Table
    out = []
    for name, r in summary["scenarios"].items():
        f = r.get("fleet")
        if not f:
            continue
        reach_s = "-" if f["reach_s"] is None else f"{f['reach_s']:.2f} s"
        known = {"unknown": "known from the bus only"}.get(f["via_tier_at_switch"],
                                                          f"{f['via_tier_at_switch']}")
        tunnel = f.get("tunnels", {}).get(f["via"])
        t = Table(title=f"fleet ({name}): while impaired, as the edge saw it",
                  caption=f"edge's traffic via {f['via'] or '?'}"
                          f"{f' over {tunnel}' if tunnel else ''} ({known} when chosen): "
                          f"requests through it {reach_s} after the outage began")
        for col in ("host", "role", "reaches origin", "edge's path", "tunnel",
                    "how before", "how", "probed", "used"):
            t.add_column(col)
        paths = f["edge_paths"]
        for host, role in f["members"].items():
            p = paths.get("direct" if host == "edge" else host, {})
            state = p.get("state") if host == "edge" else f["reach"].get(host, "no fresh leg")
            before = f.get("edge_paths_before", {}).get("direct" if host == "edge" else host, {})
            t.add_row(host, role, str(state or "-"),
                      ("direct" if host == "edge" else host) if p else "-",
                      f.get("tunnels", {}).get(host, "-"), before.get("how") or "-",
                      p.get("how") or "-", "yes" if p.get("probed") else "no",
                      "[bold]*[/bold]" if p.get("chosen") else "")
        out.append(t)
    return out


def in_vm_or_here(argv: list[str], rwdirs: tuple[str, ...] = ()) -> Optional[int]:
    """On a kernel without GRE/WireGuard/netem, run `argoctl ARGV` in the
    distribution-kernel VM and return its exit code; None: run here. It runs
    in the caller's directory (relative paths mean what they meant here);
    `rwdirs`: where it writes, besides the checkout (the rest is read-only)."""
    from argoctl.lab import vm
    if os.environ.get("ARGOCTL_IN_VM") or not vm.use_vm():
        return None
    missing = ", ".join(vm.missing_features()) or "(ARGOCTL_VM=always)"
    click.echo(f"argoctl: this kernel lacks {missing}; running in the distribution-kernel VM "
               f"(virtme-ng, ~30 s to boot; the lab exists only for this run)", err=True)
    here = os.path.abspath(__file__)      # <checkout>/argoctl/lab/demo.py
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    labmod.raise_on_sigterm()     # vm.run kills the VM on the way out
    return vm.run([sys.executable, "-m", "argoctl", *argv], cwd=os.getcwd(),
                  rwdirs=[checkout, *rwdirs])


def run_and_report(scenarios, rate: float, as_json: bool, tunnels: str,
                   live: Optional[bool]) -> None:
    """The body of `argoctl demo` and `argoctl lab scenario` (one-shot)."""
    from rich.console import Console
    labmod.raise_on_sigterm()
    try:
        summary = run_demo(scenarios, rate=rate, tunnels=tunnels, live=live)
    except KeyboardInterrupt:
        click.echo("argoctl demo: interrupted; the lab is torn down", err=True)
        sys.exit(130)
    except (ValueError, netns_topo.TopologyError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        # Not a terminal (make demo in CI, a log): wide enough that no column is cut.
        console = Console(width=None if sys.stdout.isatty() else 150)
        console.print(summary_table(summary))
        for t in fleet_tables(summary):
            console.print(t)


def demo_options(f):
    for opt in reversed([
        click.option("--scenario", "scenarios", multiple=True,
                     help=f"Scenario name or file (repeatable; default: "
                          f"{', '.join(DEFAULT_SCENARIOS)}). Shipped: "
                          f"{', '.join(scenmod.scenario_names())}."),
        click.option("--rate", type=click.FloatRange(min=1, max=500), default=DEFAULT_RATE,
                     show_default=True, help="Requests per second per client."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print the summary as one JSON object on stdout."),
        click.option("--live/--plain", default=None,
                     help="Live view or plain lines (default: live on a terminal)."),
        click.option("--tunnels", type=click.Choice(["auto", "gre", "none"]), default="auto",
                     show_default=True, help="none: fwmark routes instead of GRE (kernels "
                     "without GRE; blackholes only, no netem)."),
    ]):
        f = opt(f)
    return f


@click.command("demo")
@demo_options
def demo(scenarios, rate, as_json, live, tunnels) -> None:
    """Bring up the lab, play the outage, brownout and fleet scenarios under traffic and
    compare argoctl with a direct-only baseline measured at the same time; ends
    with a summary table and tears everything down (also on ^C).

    On a kernel without GRE/WireGuard/netem the whole run happens inside one
    boot of the distribution-kernel VM (nothing to do differently)."""
    if live is None and sys.stderr.isatty():
        live = True           # the VM's output is a pipe: ask for the live view there
    scenarios = tuple(os.path.abspath(s) if os.path.exists(s) else s for s in scenarios)
    argv = ["demo", *sum((["--scenario", s] for s in scenarios), []), "--rate", str(rate),
            "--tunnels", tunnels] + (["--json"] if as_json else []) \
        + ([] if live is None else ["--live" if live else "--plain"])
    rc = in_vm_or_here(argv)
    if rc is not None:
        sys.exit(rc)
    run_and_report(scenarios or DEFAULT_SCENARIOS, rate, as_json, tunnels, live)
