"""The `argoctl` command line. Commands are thin: they parse options, call the
module that owns the work, and render results (rich tables, or JSON)."""

from __future__ import annotations

import importlib
import os
import sys

import click

from argoctl import __version__, names


def _print_version(ctx, param, value) -> None:
    if not value or ctx.resilient_parsing:
        return
    from argoctl import native
    click.echo(f"argoctl {__version__}\n{native.version_line()}")
    ctx.exit()


class _Cli(click.Group):
    """The agent's commands, plus `lab`, `bench` and `demo`, which live outside the
    agent and are imported only when invoked (so `validate`, `up`, `run` and
    `status` never load the lab or the benchmarks)."""

    LAZY = {"bench": ("argoctl.bench.cli", "bench"), "lab": ("argoctl.lab.cli", "lab"),
            "demo": ("argoctl.lab.demo", "demo")}

    def list_commands(self, ctx) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx, name: str):
        if name in self.LAZY:
            module, attr = self.LAZY[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version (and what is compiled) and exit.")
def cli() -> None:
    """Smart routing and reachability across a fleet of Linux hosts."""


@cli.command()
@click.argument("files", nargs=-1)
@click.option("--json", "as_json", is_flag=True,
              help="one JSON object per file: ok, problems (file, line, message, hint), notes")
def validate(files: tuple[str, ...], as_json: bool) -> None:
    """Check config FILEs (default: /etc/argoctl/argoctl.toml): print every problem as
    file:line, exit 2 if any. Checks what `up` and `run` check. Changes nothing."""
    import json

    from argoctl import config
    from argoctl import preflight

    bad = False
    for file in files or (names.DEFAULT_CONFIG,):
        try:
            cfg = config.load(file)
            # what up and run derive from it (plan, engine, probes, maps), offline
            gap = preflight.problem_of(cfg)
            if gap:
                raise config.ConfigError([config.Problem(file, 1, gap)])
        except config.ConfigError as e:
            bad = True
            if as_json:
                click.echo(json.dumps({"file": file, "ok": False, "problems": [
                    {"file": p.file, "line": p.line, "message": p.message, "hint": p.hint}
                    for p in e.problems]}, sort_keys=True))
            for problem in e.problems:
                if not as_json:
                    click.echo(str(problem), err=True)
        else:
            if as_json:
                click.echo(json.dumps({"file": file, "ok": True, "summary": cfg.summary(),
                                       "notes": list(cfg.notes)}, sort_keys=True))
                continue
            click.echo(cfg.summary())
            for note in cfg.notes:
                click.echo(f"{file}: note: {note}")
    if bad:
        sys.exit(2)


@cli.command()
@click.option("--private-key", "private_key", required=True, metavar="PATH",
              help="write the private key here (mode 0600)")
@click.option("--public-key", "public_key", metavar="PATH", help="also write the public key")
@click.option("--force", is_flag=True, help="replace existing files (atomically)")
@click.option("--json", "as_json", is_flag=True, help='print {"public_key": ...}')
def keygen(private_key: str, public_key: str | None, force: bool, as_json: bool) -> None:
    """Write a new WireGuard key pair; print only the public key."""
    from argoctl import keys

    try:
        pub = keys.write_key_pair(private_key, public_key, force=force)
    except FileExistsError as e:
        click.echo(f"argoctl keygen: {e.filename} exists, not overwriting "
                   "(hint: --force replaces it)", err=True)
        sys.exit(1)
    except OSError as e:
        click.echo(f"argoctl keygen: {e.filename}: {e.strerror}", err=True)
        sys.exit(1)
    if as_json:
        import json
        click.echo(json.dumps({"public_key": keys.encode(pub), "private_key_file": private_key}))
        return
    click.echo(keys.encode(pub))


@cli.command()
@click.option("--listen", multiple=True, default=("0.0.0.0:7447",), show_default=True,
              metavar="ADDR:PORT", help="address to serve on; repeat for more ([::]:7447 for IPv6)")
@click.option("--key-file", metavar="PATH", help="shared probe key (base64, mode 0600)")
@click.option("--genkey", metavar="PATH", help="write a new probe key file (0600) and exit")
@click.option("--rate", type=click.FloatRange(min=0.1), default=100.0, show_default=True,
              help="replies per second per source address")
@click.option("--global-rate", type=click.FloatRange(min=0.1), default=20000.0,
              show_default=True, help="replies per second in total")
def responder(listen: tuple[str, ...], key_file: str | None, genkey: str | None,
              rate: float, global_rate: float) -> None:
    """Serve the authenticated UDP echo that `udp` probes use, until SIGTERM."""
    import asyncio
    import logging

    from argoctl import mac, responder as resp
    from argoctl.keys import KeyFileError

    if genkey:
        try:
            mac.write_key(genkey)
        except FileExistsError:
            click.echo(f"argoctl responder: {genkey} exists, not overwriting", err=True)
            sys.exit(1)
        except OSError as e:
            click.echo(f"argoctl responder: {genkey}: {e.strerror}", err=True)
            sys.exit(1)
        return
    if not key_file:
        click.echo("argoctl responder: --key-file is required "
                   "(hint: create one with --genkey PATH)", err=True)
        sys.exit(2)
    try:
        key = mac.read_key(key_file)
        addrs = [resp.parse_listen(a) for a in listen]
    except (KeyFileError, ValueError) as e:
        click.echo(f"argoctl responder: {e}", err=True)
        sys.exit(2)
    from argoctl import service
    service.setup_logging(logging.INFO)
    server = resp.Responder(key, addrs, rate=rate, global_rate=global_rate)
    try:
        server.bind()
    except OSError as e:
        click.echo(f"argoctl responder: cannot listen on {', '.join(listen)}: {e.strerror}",
                   err=True)
        sys.exit(1)
    logging.info("responder: listening on %s (key id %08x)", ", ".join(listen), key.key_id)
    try:
        asyncio.run(resp.serve_until_signal(server))
    finally:
        logging.info("responder: stopped: %s", resp.format_counters(server.counters))


@cli.command("probe")
@click.option("-c", "--config", "config_file", default=names.DEFAULT_CONFIG, show_default=True,
              metavar="FILE")
@click.option("--count", type=click.IntRange(min=1), default=5, show_default=True,
              help="probes per (destination, path)")
@click.option("--interval", type=click.FloatRange(min=1), metavar="MS",
              help="ms between probes (default: policy.probe_interval_ms)")
@click.option("--key-file", metavar="PATH",
              help="probe key (default: policy.responder_key_file)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per (destination, path)")
def probe_cmd(config_file: str, count: int, interval: float | None, key_file: str | None,
              as_json: bool) -> None:
    """Probe every (destination, path) once per COUNT and print RTT, loss and state."""
    import asyncio
    import json

    from argoctl import config, mac, probe
    from argoctl.keys import KeyFileError

    try:
        cfg = config.load(config_file)
    except config.ConfigError as e:
        for problem in e.problems:
            click.echo(str(problem), err=True)
        sys.exit(2)
    key_file = key_file or cfg.policy.responder_key_file
    needs_key = any(d.probe and d.probe.kind == "udp" for d in cfg.destinations)
    key = None
    if needs_key:
        if not key_file:
            click.echo(f"argoctl probe: {config_file}: udp probes need "
                       "policy.responder_key_file (or --key-file)", err=True)
            sys.exit(2)
        try:
            key = mac.read_key(key_file)
        except KeyFileError as e:
            click.echo(f"argoctl probe: {e}", err=True)
            sys.exit(2)
    from argoctl.probe.source import lan_sources
    try:
        sources = lan_sources(None, cfg.node.steer_interfaces)   # as `run` probes
        rows, rejects = asyncio.run(probe.probe_once(cfg, key, count, interval, sources))
    except (OSError, ValueError) as e:
        click.echo(f"argoctl probe: {e}", err=True)
        sys.exit(1)
    if as_json:
        for row in rows:
            click.echo(json.dumps({**row, "rejects": rejects.get(row["path"], {})},
                                  sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    def ms(v):
        return "-" if v is None else f"{v:.2f}"

    table = Table(title=f"probes ({count} per path)")
    for col in ("destination", "path", "probe", "lost", "rtt min/avg/max ms", "state"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        target = r["target"] + (f":{r['port']}" if r["port"] else "")
        rtt = "/".join(ms(r[k]) for k in ("rtt_min_ms", "rtt_avg_ms", "rtt_max_ms"))
        state = "[green]up[/]" if r["state"] == "up" else "[red]down[/]"
        table.add_row(r["destination"], r["path"], f"{r['kind']} {target}",
                      f"{r['lost']}/{r['sent']}", rtt, state)
    Console().print(table)
    for path, counts in sorted(rejects.items()):
        if counts:
            click.echo(f"{path}: not counted as replies: "
                       + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))


def _load_or_exit(config_file: str, preflight: bool = False):
    """The config, or exit 2 with every problem. With `preflight` (up, run) also
    what validate checks beyond the file (argoctl.preflight), so up and run refuse
    exactly what validate refuses."""
    from argoctl import config
    try:
        cfg = config.load(config_file)
        if preflight:
            from argoctl import preflight as pf
            gap = pf.problem_of(cfg)
            if gap:
                raise config.ConfigError([config.Problem(config_file, 1, gap)])
        return cfg
    except config.ConfigError as e:
        for problem in e.problems:
            click.echo(str(problem), err=True)
        sys.exit(2)


CAP_NET_ADMIN = 12


def _need_privileges(command: str, as_json: bool = False) -> None:
    """Exit 4 with "permission denied" without CAP_NET_ADMIN: nftables, the BPF pins
    and our run directory are root's, and reading them unprivileged would show an
    empty host as if argoctl were absent."""
    try:
        with open("/proc/self/status") as f:
            caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        caps = 0 if os.geteuid() else ~0
    if caps & (1 << CAP_NET_ADMIN):
        return
    msg = (f"argoctl {command}: permission denied: reading nftables, the BPF pins and "
           f"{names.RUN_DIR} needs root (CAP_NET_ADMIN); run it with sudo")
    if as_json:
        import json
        click.echo(json.dumps({"error": "permission denied", "message": msg}))
    click.echo(msg, err=True)
    sys.exit(4)


def _control_errors():
    from argoctl import datapath, home, keys, netlink, nft, plan
    return (plan.PlanError, netlink.ApplyError, netlink.InjectedFailure, nft.NftError,
            keys.KeyFileError, datapath.DatapathError, home.Refused, OSError)


@cli.command()
@click.option("-c", "--config", "config_file", default=names.DEFAULT_CONFIG, show_default=True,
              metavar="FILE")
@click.option("--dry-run", is_flag=True, help="print the plan (add/change/remove), touch nothing")
@click.option("--json", "as_json", is_flag=True, help="print ops and counts as JSON")
def up(config_file: str, dry_run: bool, as_json: bool) -> None:
    """Bring this host to FILE: tunnels, addresses, tables, rules, nft, then the
    datapath and its first path sets. Idempotent; on any failure the host is
    restored to its state before the call. Refused while `argoctl run` runs here."""
    import json

    from argoctl import apply, home

    cfg = _load_or_exit(config_file, preflight=True)
    try:
        ctx = apply.up(cfg, dry_run=dry_run)
    except home.Refused as e:
        click.echo(f"argoctl up: {e} (nothing changed)", err=True)
        sys.exit(1)
    except _control_errors() as e:
        click.echo(f"argoctl up: {e} (host unchanged)", err=True)
        sys.exit(1)
    dp = None
    if ctx.attach is not None:
        a = ctx.attach
        dp = {"pin_dir": ctx.home.pin_dir, "compiled": a.compiled, "steered": a.steered,
              "passive": a.passive, "newly_attached": a.newly_attached, "cgroup": a.cgroup,
              "clsact_added": a.clsact_added, **ctx.extra.get("maps", {})}
    _warn("up", ctx.warnings)
    if as_json:
        out = {"dry_run": dry_run, "ops": [op.to_dict() for op in ctx.ops], "datapath": dp,
               "warnings": ctx.warnings}
        if ctx.result:
            out.update(writes=ctx.result.writes, netlink_writes=ctx.result.netlink_writes,
                       nft_writes=ctx.result.nft_writes, sysctl_writes=ctx.result.sysctl_writes)
        click.echo(json.dumps(out, sort_keys=True, default=str))
        return
    for op in ctx.ops:
        click.echo(str(op))
    if dry_run:
        click.echo(f"{len(ctx.ops)} change(s) planned, nothing applied (--dry-run)")
    elif not ctx.ops:
        click.echo("up to date: 0 writes")
    else:
        click.echo(f"applied {len(ctx.ops)} change(s) with {ctx.result.writes} write(s)")
    if dp:
        click.echo(f"datapath {'loaded' if dp['compiled'] else 'adopted'}: steering "
                   f"{', '.join(dp['steered']) or 'no interface'}; {dp['destinations']} destination(s)")


@cli.command()
@click.option("-c", "--config", "config_file", metavar="FILE",
              help="use its table/priority ranges (default: those of the last up)")
@click.option("--dry-run", is_flag=True, help="print what would be removed")
@click.option("--json", "as_json", is_flag=True, help="ops, counts and the datapath as JSON")
def down(config_file: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove everything argoctl created on this host, and nothing else."""
    import json

    from argoctl import apply

    _need_privileges("down")
    routing = _load_or_exit(config_file).routing if config_file else None
    try:
        ctx = apply.down(routing, dry_run=dry_run)
    except _control_errors() as e:
        click.echo(f"argoctl down: {e}", err=True)
        sys.exit(1)
    dp = ctx.extra.get("datapath")
    _warn("down", ctx.warnings)
    if as_json:
        out = {"dry_run": dry_run, "ops": [op.to_dict() for op in ctx.ops],
               "removed": 0 if dry_run else len(ctx.ops), "datapath": dp,
               "warnings": ctx.warnings}
        if ctx.result:
            out.update(writes=ctx.result.writes)
        click.echo(json.dumps(out, sort_keys=True, default=str))
        return
    if dp and (dp["filters_removed"] or dp["unpinned"]):
        click.echo(f"datapath detached from {', '.join(dp['filters_removed']) or 'no interface'}"
                   f"; {len(dp['unpinned'])} pin(s) removed")
    for op in ctx.ops:
        click.echo(str(op))
    click.echo(f"{len(ctx.ops)} object(s) " + ("would be removed" if dry_run else "removed"))


@cli.command()
@click.option("-c", "--config", "config_file", metavar="FILE", help="name paths after it")
@click.option("--json", "as_json", is_flag=True)
def status(config_file: str | None, as_json: bool) -> None:
    """Tunnels, paths (mark, table, rules) and routes argoctl owns here."""
    import json

    from argoctl import status as st

    _need_privileges("status", as_json)
    cfg = _load_or_exit(config_file) if config_file else None
    try:
        data = st.collect(config=cfg)
    except _control_errors() as e:
        click.echo(f"argoctl status: {e}", err=True)
        sys.exit(1)
    from argoctl import explain as ex
    try:
        data["choices"] = ex.live_choices()     # None: no `argoctl run` here yet
    except ValueError as e:                     # damaged: said, never silently left out
        data["choices"] = None
        data["problems"].append(f"{e}: live choices not shown (a running `argoctl run` "
                                "rewrites it within seconds; `argoctl down` removes it)")
    from argoctl import datapath, home
    data["datapath"] = datapath.status(home.pin_dir())
    if as_json:
        click.echo(json.dumps(data, sort_keys=True, default=str))
    else:
        _warn("status", data["problems"])
        st.render(data)
        if data["datapath"]["loaded"]:
            import rich
            names_ = st.path_names(cfg) if cfg else {0: "direct"}
            for table in st.status_table(data["datapath"], names_):
                rich.print(table)
        if data["choices"]:
            ex.render_choices(data["choices"])


@cli.command("run")
@click.option("-c", "--config", "config_file", default=names.DEFAULT_CONFIG, show_default=True,
              metavar="FILE")
@click.option("--cleanup", is_flag=True,
              help="on exit, detach the datapath and remove everything (`down`); default: "
                   "leave the datapath and the last decisions in place (hitless restart)")
@click.option("--cgroup", default="auto", show_default=True, metavar="PATH|none",
              help="cgroup2 whose sockets are steered (auto: the root; none: no local steering)")
@click.option("--netns", default=None, hidden=True, help="run for this network namespace")
def run_cmd(config_file: str, cleanup: bool, cgroup: str, netns: str | None) -> None:
    """Apply FILE, attach the datapath, then measure every path and steer new flows
    onto the best one until SIGTERM. Decisions are logged one JSON line each."""
    import asyncio
    import logging

    from argoctl import daemon as dmn
    from argoctl import datapath
    from argoctl.keys import KeyFileError

    cfg = _load_or_exit(config_file, preflight=True)
    from argoctl import service
    service.setup_logging(logging.INFO)
    opts = dmn.Options(ns=netns, cleanup=cleanup, cgroup=None if cgroup == "none" else cgroup,
                       freeze_heap=True)
    from argoctl import native
    if native.missing_message():
        logging.warning("argoctl run: %s", native.missing_message())
    d = dmn.Daemon(cfg, opts)
    try:
        d.setup()
    except dmn.DaemonError as e:
        click.echo(f"argoctl run: {e}", err=True)
        sys.exit(1)
    except KeyFileError as e:
        click.echo(f"argoctl run: {e}", err=True)
        sys.exit(2)
    except (datapath.DatapathError, *_control_errors()) as e:
        click.echo(f"argoctl run: {e}", err=True)
        sys.exit(1)
    current = [d]     # a reload (SIGHUP) replaces the daemon serving
    try:
        from argoctl import netlink
        with netlink.netns(netns):
            from argoctl import reload
            reload.run_until_signal(d, current)
    finally:
        current[0].close()


@cli.command()
@click.argument("dest")
@click.option("--json", "as_json", is_flag=True, help="the destination's entry of the state file")
@click.option("--run-dir", default=None, hidden=True)
@click.option("--netns", default=None, hidden=True)
def explain(dest: str, as_json: bool, run_dir: str | None, netns: str | None) -> None:
    """The scores of DEST's paths and the reason for its current choice (from `argoctl run`)."""
    import json

    from argoctl import explain as ex

    doc = _live_state("explain", run_dir, netns)
    if dest not in doc["destinations"]:
        known = ", ".join(sorted(doc["destinations"])) or "none"
        click.echo(f"argoctl explain: no destination {dest!r} (known: {known})", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps({"dest": dest, "stale": doc["stale"],
                               **doc["destinations"][dest]}, sort_keys=True))
    else:
        click.echo(ex.text(doc, dest))


@cli.group()
def fleet() -> None:
    """Fleet mode ([fleet]): what this host's daemon knows of the fleet."""


@fleet.command("status")
@click.option("--dest", metavar="DEST", help="which host reaches DEST, and how this host does")
@click.option("--json", "as_json", is_flag=True, help="the fleet part of the state file")
@click.option("--run-dir", default=None, hidden=True)
@click.option("--netns", default=None, hidden=True)
def fleet_status(dest: str | None, as_json: bool, run_dir: str | None, netns: str | None) -> None:
    """Members, their health and versions, the bus; with --dest, who reaches DEST."""
    import json

    doc = _live_state("fleet status", run_dir, netns)
    if "fleet" not in doc:
        click.echo("argoctl fleet status: the daemon runs without a [fleet] section", err=True)
        sys.exit(1)
    if dest is not None and dest not in doc["destinations"]:
        known = ", ".join(sorted(doc["destinations"])) or "none"
        click.echo(f"argoctl fleet status: no destination {dest!r} (known: {known})", err=True)
        sys.exit(2)
    try:
        if as_json:
            out = {"node": doc["node"], "stale": doc["stale"], **doc["fleet"]}
            if dest is not None:
                out = {"node": doc["node"], "stale": doc["stale"], "dest": dest,
                       "mode": doc["fleet"]["mode"], "reach": doc["fleet"]["reach"][dest],
                       "paths": doc["fleet"]["paths"][dest]}
            click.echo(json.dumps(out, sort_keys=True))
            return
        from argoctl.fleet.status import render
        render(doc, dest)
    except (KeyError, TypeError, AttributeError, ValueError) as e:   # a damaged fleet part
        from argoctl import explain as ex
        click.echo(f"argoctl fleet status: {ex.path(run_dir, netns)}: its fleet part is "
                   f"damaged ({type(e).__name__}: {e}); a running `argoctl run` rewrites "
                   "it within seconds", err=True)
        sys.exit(1)


def _fleet_config(config_file: str):
    cfg = _load_or_exit(config_file)
    if cfg.fleet is None:
        click.echo(f"argoctl fleet: {config_file} has no [fleet] section", err=True)
        sys.exit(2)
    return cfg


@fleet.command("permissions")
@click.option("-c", "--config", "config_file", required=True, metavar="FILE")
def fleet_permissions(config_file: str) -> None:
    """This host's NATS user for the servers' authorization block (JSON, which
    nats-server's config accepts): it may write only its own keys."""
    import json

    from argoctl.fleet.admin import permissions
    cfg = _fleet_config(config_file)
    fc = cfg.fleet
    user = cfg.node.name
    if fc.credentials_file:
        from argoctl.fleet.credentials import read_credentials
        from argoctl.keys import KeyFileError
        try:
            user = read_credentials(fc.credentials_file).user
        except KeyFileError as e:
            click.echo(f"argoctl fleet permissions: {e}", err=True)
            sys.exit(2)
    click.echo(json.dumps({"user": user, "password": "<the password of its credentials file>",
                           "permissions": permissions(cfg.node.name, fc.members_bucket,
                                                      fc.legs_bucket)}, indent=2))


@fleet.command("init")
@click.option("-c", "--config", "config_file", required=True, metavar="FILE")
@click.option("--admin-credentials", required=True, metavar="PATH",
              help="TOML user/password (0600) of a NATS user allowed to create streams")
@click.option("--replicas", type=click.IntRange(1, 5), default=1, show_default=True,
              help="JetStream replicas (the cluster size, up to 5)")
def fleet_init(config_file: str, admin_credentials: str, replicas: int) -> None:
    """Create the fleet's two key-value buckets ([fleet] names, TTL) on its servers."""
    import asyncio

    from argoctl.fleet.admin import create_buckets
    from argoctl.fleet.agent import tls_context
    from argoctl.fleet.credentials import read_credentials
    from argoctl.keys import KeyFileError
    fc = _fleet_config(config_file).fleet
    try:
        c = read_credentials(admin_credentials)
    except KeyFileError as e:
        click.echo(f"argoctl fleet init: {e}", err=True)
        sys.exit(2)
    try:
        made = asyncio.run(create_buckets(list(fc.servers), c.user, c.password,
                                          fc.members_bucket, fc.legs_bucket, fc.ttl_s,
                                          replicas, tls=tls_context(fc), timeout_s=20))
    except Exception as e:   # unreachable, refused, ...: one line, no traceback
        from argoctl.fleet.bus import safe_error
        click.echo(f"argoctl fleet init: {safe_error(e)}", err=True)
        sys.exit(1)
    click.echo(f"buckets {', '.join(made)}: ttl {fc.ttl_s:g} s, {replicas} replica(s)")



def _warn(command: str, warnings: list[str]) -> None:
    """Damaged run files and what was done instead, one line each on stderr."""
    for w in warnings:
        click.echo(f"argoctl {command}: warning: {w}", err=True)


def _live_state(command: str, run_dir: str, netns) -> dict:
    """The running daemon's state file, or a clean exit naming what is wrong."""
    from argoctl import explain as ex

    try:
        return ex.load(run_dir, netns)
    except FileNotFoundError:
        click.echo(f"argoctl {command}: no live state: is `argoctl run` running?", err=True)
        sys.exit(1)
    except ValueError as e:       # damaged, or another version's: names the file
        click.echo(f"argoctl {command}: {e}: no live state to show (a running `argoctl run` "
                   "rewrites it within seconds; `argoctl down` removes it)", err=True)
        sys.exit(1)

def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
