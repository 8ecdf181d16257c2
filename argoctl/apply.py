"""`up` and `down` as pipelines of stages, each with apply / rollback / down.

`up` runs the stages in order; if one raises, the stages already applied are
rolled back in reverse, so the host ends where it started. `down` runs every
stage's `down` in reverse order. Later features (datapath attach) add a stage
to UP_STAGES instead of editing `up`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

from argoctl import names, netlink, plan
from argoctl.config import Config, Routing
from argoctl.netlink import Applier, KernelEnv, Result, Saved


@dataclass
class Context:
    ns: Optional[str]                 # network namespace (None: the current one)
    run_dir: str
    config: Optional[Config] = None
    routing: Routing = field(default_factory=Routing)
    dry_run: bool = False
    fail_at: Optional[int] = None
    ipr: object = None
    nft: object = None
    applier: Optional[Applier] = None
    ops: list = field(default_factory=list)
    result: Optional[Result] = None
    extra: dict = field(default_factory=dict)   # for other stages' results

    @property
    def state_dir(self) -> str:
        return netlink.state_dir(self.ns, self.run_dir)


class Stage:
    name = "stage"

    def apply(self, ctx: Context) -> None: ...
    def rollback(self, ctx: Context) -> None: ...
    def down(self, ctx: Context) -> None: ...


class Reconcile(Stage):
    """Kernel objects: tunnels, addresses, tables, rules, sysctls, nft."""
    name = "reconcile"

    def apply(self, ctx: Context) -> None:
        current = self.current(ctx)
        from argoctl import foreign     # another user of our mark bits: refuse, name it
        conflicts = foreign.mark_conflicts(ctx.ipr, ctx.config.routing, current)
        if conflicts:
            raise plan.PlanError(foreign.conflict_message(ctx.config.routing, conflicts))
        want = plan.desired(ctx.config, KernelEnv(ctx.ipr, create_keys=not ctx.dry_run))
        ctx.ops = plan.diff(current, want)
        if ctx.dry_run:
            return
        ctx.result = ctx.applier.apply(ctx.ops, fail_at=ctx.fail_at)
        netlink.save_routing(ctx.state_dir, ctx.routing)

    def rollback(self, ctx: Context) -> None:
        errors = ctx.applier.rollback(ctx.applier.journal)
        if errors:
            raise netlink.ApplyError("rollback of kernel state incomplete", errors)

    def down(self, ctx: Context) -> None:
        ctx.ops = plan.diff(self.current(ctx), plan.State())
        if ctx.dry_run:
            return
        ctx.result = ctx.applier.apply(ctx.ops, fail_at=ctx.fail_at)
        path = os.path.join(ctx.state_dir, "routing.json")
        if os.path.exists(path):
            os.unlink(path)

    @staticmethod
    def current(ctx: Context) -> plan.State:
        return netlink.read_owned(ctx.ipr, ctx.routing, wg=lambda: ctx.applier.wg, nft=ctx.nft,
                                  saved=ctx.applier.saved.load())


UP_STAGES: list[Stage] = [Reconcile()]


def default_run_dir() -> str:
    return os.environ.get("ARGOCTL_RUN_DIR") or names.RUN_DIR   # tests point it elsewhere


def _fail_at(fail_at):
    if fail_at is None and os.environ.get("ARGOCTL_FAIL_AT"):
        return int(os.environ["ARGOCTL_FAIL_AT"])  # failure injection for CLI tests
    return fail_at


def _run(ctx: Context, body) -> Context:
    from pyroute2 import IPRoute, WireGuard
    from argoctl import nft
    with netlink.netns(ctx.ns):
        ctx.ipr = IPRoute()
        try:
            ctx.nft = nft.Client()
            ctx.applier = Applier(ctx.ipr, WireGuard, ctx.nft, Saved(ctx.state_dir))
            body(ctx)
        finally:
            if ctx.applier is not None:
                ctx.applier.close()
            ctx.ipr.close()
    return ctx


def up(config: Config, ns: Optional[str] = None, dry_run: bool = False,
       fail_at: Optional[int] = None, run_dir: Optional[str] = None) -> Context:
    """Reconcile the host (or namespace `ns`) to `config`. Returns the context with
    ops and write counts; on failure raises after restoring the prior state."""
    ctx = Context(ns=ns, run_dir=run_dir or default_run_dir(), config=config,
                  routing=config.routing, dry_run=dry_run, fail_at=_fail_at(fail_at))

    def body(ctx):
        started = time.monotonic()
        done: list[Stage] = []
        try:
            for stage in UP_STAGES:
                stage.apply(ctx)
                done.append(stage)
        except BaseException:
            for stage in reversed(done):
                stage.rollback(ctx)
            raise
        ctx.extra["seconds"] = time.monotonic() - started
    return _run(ctx, body)


def down(routing: Optional[Routing] = None, ns: Optional[str] = None, dry_run: bool = False,
         run_dir: Optional[str] = None) -> Context:
    """Remove everything argoctl owns. Without a config, the ranges of the last `up`
    (saved in the run directory) or the defaults identify our objects."""
    ctx = Context(ns=ns, run_dir=run_dir or default_run_dir(), dry_run=dry_run)
    ctx.routing = routing or netlink.load_routing(ctx.state_dir)

    def body(ctx):
        for stage in reversed(UP_STAGES):
            stage.down(ctx)
    return _run(ctx, body)
