"""The `argoctl` command line. Commands are thin: they parse options, call the
module that owns the work, and render results (rich tables, or JSON)."""

from __future__ import annotations

import sys

import click

from argoctl import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="argoctl")
def cli() -> None:
    """Smart routing and reachability across a fleet of Linux hosts."""


@cli.command()
@click.argument("files", nargs=-1, required=True)
def validate(files: tuple[str, ...]) -> None:
    """Check config FILEs: print every problem as file:line, exit 2 if any. Changes nothing."""
    from argoctl import config

    bad = False
    for file in files:
        try:
            cfg = config.load(file)
        except config.ConfigError as e:
            bad = True
            for problem in e.problems:
                click.echo(str(problem), err=True)
        else:
            click.echo(cfg.summary())
    if bad:
        sys.exit(2)


@cli.command()
@click.option("--private-key", "private_key", required=True, metavar="PATH",
              help="write the private key here (mode 0600)")
@click.option("--public-key", "public_key", metavar="PATH", help="also write the public key")
@click.option("--force", is_flag=True, help="replace existing files (atomically)")
def keygen(private_key: str, public_key: str | None, force: bool) -> None:
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
    click.echo(keys.encode(pub))


from argoctl.bench import bench  # noqa: E402

cli.add_command(bench)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
