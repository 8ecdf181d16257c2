"""`argoctl lab ...`: the standard lab (client, edge, relay1, relay2, origin).

This module holds the command group; `lab up|down|status|impair|scenario` add
themselves here. The per-host configs come from argoctl/labconfig.py, shared by
the namespace lab, vagrant/provision.sh and the tests."""

from __future__ import annotations

import click

from argoctl import keys, labconfig


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
