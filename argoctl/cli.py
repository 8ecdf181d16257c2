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


from argoctl.bench import bench  # noqa: E402

cli.add_command(bench)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
