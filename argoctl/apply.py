"""The one lifecycle. `up`, `down`, `run`'s start-up and the benchmarks go through
the same ordered stages, each with apply, rollback and down (Cilium's cells,
start and stop):

  1. links     tunnels, addresses, tables, routes, rules, sysctls (plan -> netlink)
  2. nft       the `inet argoctl` table
  3. datapath  load (or adopt) the pinned programs and maps; tc filters (and the
               clsact qdiscs argoctl adds), cgroup hooks
  4. maps      the first map contents: prefixes and the first path sets

`up` plans once (read what we own, diff against the config), then runs the
stages in order. If anything raises (a stage's own partial work is undone by the
stage), the stages already applied are rolled back in reverse, so the namespace
ends exactly where it started. `down` runs every stage's `down` in reverse.

Every kernel write first calls Context.step(what): ARGOCTL_FAIL_AT=k raises
InjectedFailure before the k-th, ARGOCTL_KILL_AT=k kills the process there
(SIGKILL: tests of an `up` killed at any instant), ARGOCTL_FAIL_STAGE=name fails
right after that stage completed. `up` and `down` hold the namespace's instance
lock (home.py) while they run, so they never build a second datapath beside a
running `argoctl run`.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from argoctl import home as homes, names, netlink, plan, runfiles
from argoctl.config import Config, Routing
from argoctl.home import Home, default_run_dir  # noqa: F401  (default_run_dir: re-exported)
from argoctl.intent import Intents
from argoctl.netlink import Applier, InjectedFailure, KernelEnv, Result, Saved
from argoctl.nft import Nft as NftObject

STAGE_NAMES = ("links", "nft", "datapath", "maps")


@dataclass
class Context:
    home: Home
    config: Optional[Config] = None
    routing: Routing = field(default_factory=Routing)
    dry_run: bool = False
    stages: tuple[str, ...] = STAGE_NAMES
    fail_at: Optional[int] = None        # InjectedFailure before this step
    kill_at: object = None               # SIGKILL before this step (index, or name prefix)
    fail_stage: Optional[str] = None     # InjectedFailure after this stage
    cgroup: Optional[str] = "auto"       # socket hooks (datapath.attach's cgroup)
    sizes: object = None                 # datapath.Sizes (None: the defaults)
    # the first map contents: (open maps.Maps) -> {dest id: path set}; None: the
    # config's first path sets (config.first_weights)
    pathsets: Optional[Callable] = None
    ipr: object = None
    snap: object = None                  # netlink.Snapshot: the dumps this call shares
    nft: object = None
    applier: Optional[Applier] = None
    intents: Optional[Intents] = None
    ops: list = field(default_factory=list)
    result: Optional[Result] = None
    attach: object = None                # datapath.AttachResult of this call
    steps: int = 0
    log: list = field(default_factory=list)   # what each step was (for tests)
    extra: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)  # damaged run files and what was done instead

    @property
    def ns(self) -> Optional[str]:
        return self.home.ns

    @property
    def state_dir(self) -> str:
        return self.home.state_dir

    def step(self, what: str) -> None:
        k = self.steps
        self.steps += 1
        self.log.append(what)
        if self.kill_at == k or (isinstance(self.kill_at, str) and what.startswith(self.kill_at)):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fail_at == k:
            raise InjectedFailure(f"injected failure before step {k}: {what}")


class Stage:
    name = "stage"

    def apply(self, ctx: Context) -> None: ...
    def rollback(self, ctx: Context) -> None: ...
    def down(self, ctx: Context) -> None: ...


class Links(Stage):
    """Kernel objects: tunnels, addresses, tables, routes, rules, sysctls."""
    name = "links"

    @staticmethod
    def mine(op) -> bool:
        return not isinstance(op.obj, NftObject)

    def apply(self, ctx: Context) -> None:
        ops = [op for op in ctx.ops if self.mine(op)]
        ctx.applier.apply(ops)
        if ops:
            ctx.snap.forget()       # (the next stages dump what this one changed)
        ctx.extra["journal_" + self.name] = ctx.applier.journal
        try:
            runfiles.load_routing(ctx.state_dir)
        except runfiles.RunFileError as e:
            ctx.warnings.append(f"{e}: replaced with this config's ranges")
        runfiles.save_routing(ctx.state_dir, ctx.routing)

    def rollback(self, ctx: Context) -> None:
        errors = ctx.applier.rollback(ctx.extra.get("journal_" + self.name, []))
        if errors:
            raise netlink.ApplyError(f"rollback of {self.name} incomplete", errors)

    def down(self, ctx: Context) -> None:
        ops = [op for op in ctx.ops if self.mine(op)]
        if not ctx.dry_run:
            ctx.applier.apply(ops)


class Nft(Links):
    """The `inet argoctl` table."""
    name = "nft"

    @staticmethod
    def mine(op) -> bool:
        return isinstance(op.obj, NftObject)

    def apply(self, ctx: Context) -> None:
        ctx.applier.apply([op for op in ctx.ops if self.mine(op)])
        ctx.extra["journal_" + self.name] = ctx.applier.journal


class Datapath(Stage):
    """Programs and maps pinned (compiled, or adopted from the pins), attached."""
    name = "datapath"

    def apply(self, ctx: Context) -> None:
        from argoctl import datapath
        ctx.attach = datapath.AttachResult(compiled=False)
        kw = {"sizes": ctx.sizes} if ctx.sizes is not None else {}
        try:
            datapath.attach(ctx.config, pin_dir=ctx.home.pin_dir, netns=None, cgroup=ctx.cgroup,
                            res=ctx.attach, step=ctx.step, intents=ctx.intents,
                            snap=ctx.snap, **kw)
        except BaseException:
            self.rollback(ctx)
            raise

    def rollback(self, ctx: Context) -> None:
        from argoctl import datapath
        if ctx.attach is not None:
            datapath.undo(ctx.attach, netns=None, intents=ctx.intents)

    def down(self, ctx: Context) -> None:
        from argoctl import datapath
        if ctx.dry_run:
            return
        ctx.extra["datapath"] = datapath.detach(ctx.home.pin_dir, netns=None, cgroup=ctx.cgroup,
                                                intents=ctx.intents)


class Maps(Stage):
    """The first map contents. Maps the call found pinned are put back as they
    were on rollback; maps it created go with the pins (Datapath's rollback)."""
    name = "maps"

    def apply(self, ctx: Context) -> None:
        from argoctl import datapath, maps
        pin_dir = ctx.home.pin_dir
        before = None
        if not ctx.attach.pins_created:       # read once: the undo, and what to change
            before = ctx.extra["maps_before"] = datapath.map_contents(pin_dir)
        try:
            with maps.Maps(pin_dir) as m:
                sets = ctx.pathsets(m) if ctx.pathsets is not None else None
            ctx.step("first map contents")
            ctx.extra["maps"] = datapath.program(ctx.config, pin_dir, pathsets=sets,
                                                 have=before["prefixes"] if before else None)
        except BaseException:
            self.rollback(ctx)
            raise

    def rollback(self, ctx: Context) -> None:
        from argoctl import datapath
        before = ctx.extra.pop("maps_before", None)
        if before is not None:
            datapath.restore_contents(ctx.home.pin_dir, before)


STAGES: dict[str, Stage] = {s.name: s for s in (Links(), Nft(), Datapath(), Maps())}
UP_STAGES: list[Stage] = list(STAGES.values())


def _env_int(name: str, value: Optional[int]) -> Optional[int]:
    if value is None and os.environ.get(name):
        return int(os.environ[name])   # failure injection for CLI tests
    return value


def _run(ctx: Context, body, command: str, lock: bool) -> Context:
    from pyroute2 import IPRoute, WireGuard
    from argoctl import nft
    held = homes.InstanceLock(ctx.state_dir, command) if lock and not ctx.dry_run else None
    if held is not None:
        try:
            held.acquire()
        except homes.Refused:
            who = held.holder() or "run"
            if who == "run":
                raise homes.Refused(
                    f"`argoctl run` is running in this namespace and owns its datapath "
                    f"({held.path}): `{command}` would build a second one. Change the config "
                    f"and restart `argoctl run`, or stop it first") from None
            raise
    try:
        with netlink.netns(ctx.ns):
            ctx.ipr = IPRoute()
            ctx.snap = netlink.Snapshot()
            try:
                ctx.nft = nft.Client()
                ctx.intents = Intents(ctx.state_dir)
                ctx.applier = Applier(ctx.ipr, WireGuard, ctx.nft, Saved(ctx.state_dir),
                                      intents=ctx.intents, step=ctx.step)
                body(ctx)
            finally:
                for w in (ctx.intents.warnings if ctx.intents else []) + \
                        (ctx.applier.saved.warnings if ctx.applier else []):
                    if w not in ctx.warnings:
                        ctx.warnings.append(w)
                if ctx.applier is not None:
                    ctx.applier.close()
                ctx.snap.close()
                ctx.ipr.close()
    finally:
        if held is not None:
            held.release()
    return ctx


def _current(ctx: Context) -> plan.State:
    return netlink.read_owned(ctx.ipr, ctx.routing, wg=lambda: ctx.applier.wg, nft=ctx.nft,
                              saved=ctx.applier.saved.load(), snap=ctx.snap)


def up(config: Config, ns: Optional[str] = None, dry_run: bool = False,
       fail_at: Optional[int] = None, run_dir: Optional[str] = None,
       stages: tuple[str, ...] = STAGE_NAMES, cgroup: Optional[str] = "auto",
       pathsets: Optional[Callable] = None, lock: bool = True, kill_at: Optional[int] = None,
       fail_stage: Optional[str] = None, sizes=None) -> Context:
    """Bring the namespace `ns` (None: the current one) to `config` through the
    stages. Returns the context (ops, write counts, attach result); on failure
    raises after restoring the prior state."""
    ctx = Context(home=homes.locate(ns, run_dir), config=config, routing=config.routing,
                  dry_run=dry_run, stages=stages, fail_at=_env_int("ARGOCTL_FAIL_AT", fail_at),
                  kill_at=_env_int("ARGOCTL_KILL_AT", kill_at),
                  fail_stage=fail_stage or os.environ.get("ARGOCTL_FAIL_STAGE") or None,
                  cgroup=cgroup, pathsets=pathsets, sizes=sizes)

    def body(ctx):
        started = time.monotonic()
        if not ctx.dry_run:
            # an `up` killed before it could alias a device it created left it here
            ctx.extra["interrupted"] = netlink.remove_interrupted(ctx.ipr, ctx.intents)
        if "links" in ctx.stages or "nft" in ctx.stages:
            current = _current(ctx)
            from argoctl import foreign     # another user of our mark bits: refuse, name it
            conflicts = foreign.mark_conflicts(ctx.ipr, ctx.config.routing, current, ctx.snap)
            if conflicts:
                raise plan.PlanError(foreign.conflict_message(ctx.config.routing, conflicts))
            ctx.ops = plan.diff(current, plan.desired(
                ctx.config, KernelEnv(ctx.ipr, create_keys=not ctx.dry_run,
                                      prefetch=[p.address for p in ctx.config.peers])))
        if ctx.dry_run:
            return
        done: list[Stage] = []
        try:
            for name in ctx.stages:
                stage = STAGES[name]
                stage.apply(ctx)
                done.append(stage)
                if ctx.fail_stage == name:
                    raise InjectedFailure(f"injected failure after stage {name}")
            if ctx.fail_at is not None and ctx.fail_at >= ctx.steps:
                raise InjectedFailure(f"injected failure after the last step ({ctx.steps})")
        except BaseException as e:
            if isinstance(e, InjectedFailure):
                e.steps = list(ctx.log)          # what the steps were (tests enumerate them)
            errors = []
            for stage in reversed(done):
                try:
                    stage.rollback(ctx)
                except Exception as r:  # keep undoing the others; report it
                    errors.append(f"{stage.name}: {r}")
            if errors:
                raise netlink.ApplyError(str(e), errors) from e
            raise
        ctx.result = ctx.applier.result(ctx.ops)
        ctx.extra["seconds"] = time.monotonic() - started
    return _run(ctx, body, "up", lock)


def down(routing: Optional[Routing] = None, ns: Optional[str] = None, dry_run: bool = False,
         run_dir: Optional[str] = None, cgroup: Optional[str] = "auto",
         lock: bool = True) -> Context:
    """Remove everything argoctl owns in the namespace. Without a config, the ranges
    of the last `up` (saved in the state directory) or the defaults identify our
    objects."""
    ctx = Context(home=homes.locate(ns, run_dir), dry_run=dry_run, cgroup=cgroup)
    ctx.routing = routing or runfiles.load_routing_or_default(ctx.state_dir, ctx.warnings)

    def body(ctx):
        if not dry_run:
            ctx.extra["interrupted"] = netlink.remove_interrupted(ctx.ipr, ctx.intents)
        ctx.ops = plan.diff(_current(ctx), plan.State())
        for stage in reversed(UP_STAGES):
            stage.down(ctx)
        ctx.result = ctx.applier.result(ctx.ops)
        if not dry_run:
            # (damaged or not, `down` leaves no run file but the lock: what a
            # damaged one held was said, and is of no use once all is removed)
            for name in (names.ROUTING_FILE, names.STATE_FILE):
                runfiles.remove(os.path.join(ctx.state_dir, name))
            if ctx.applier.saved.warnings:
                runfiles.remove(ctx.applier.saved.path)
            ctx.intents.forget_damage()
    return _run(ctx, body, "down", lock)
