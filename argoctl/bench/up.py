"""`argoctl bench up`: time `up` for many peers and prefixes in a throwaway namespace,
then the no-op re-apply, with the number of writes of each (one JSON line each).

Needs GRE or WireGuard in the kernel (GRE preferred); on a host without them, run it
under the distribution kernel: `python -m argoctl.lab.vm -- .venv/bin/argoctl bench up`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

import click

from argoctl import apply, config, keys

NS_PREFIX = "agbench"


def _kernel_has(kind: str, ns: str) -> bool:
    """Try to create one device of `kind` in the namespace (autoloads the module)."""
    extra = ["local", "192.0.2.1", "remote", "192.0.2.2"] if kind == "gre" else []
    ok = subprocess.run(["ip", "-n", ns, "link", "add", "agprobe0", "type", kind, *extra],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "-n", ns, "link", "del", "agprobe0"], check=True)
    return ok


def _config_text(kind: str, peers: int, prefixes: int, keyfile: str) -> str:
    lines = ['[node]', 'name = "bench"', 'address = "192.0.2.1"',
             'tunnel_address = "2001:db8:1::ffff"']
    if kind == "wireguard":
        lines.append(f'private_key_file = "{keyfile}"')
    for i in range(1, peers + 1):
        lines += ['[[peer]]', f'name = "p{i}"', f'id = {i}', f'address = "198.51.100.{i}"',
                  f'tunnel = "{kind}"', f'tunnel_address = "2001:db8:1::{i:x}"']
        if kind == "wireguard":
            pub = keys.encode(keys.public_key(i.to_bytes(32, "little")))
            lines += [f'public_key = "{pub}"', 'port = 51820', f'listen_port = {40000 + i}']
    per = max(1, prefixes // max(peers, 1))
    n = 0
    d = 0
    while n < prefixes:
        count = min(per, prefixes - n)
        pfx = ", ".join(f'"2001:db8:{0x100 + (n + j) // 0x10000:x}:{(n + j) % 0x10000:x}::/64"'
                        for j in range(count))
        d += 1
        lines += ['[[destination]]', f'name = "d{d}"', f'prefixes = [{pfx}]',
                  f'paths = ["direct", "p{(d - 1) % max(peers, 1) + 1}"]']
        n += count
    return "\n".join(lines) + "\n"


def run(peers: int, prefixes: int, kind: str | None) -> list[dict]:
    ns = f"{NS_PREFIX}{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        script = ["link set lo up", "link add bench0 type veth peer name bench1",
                  "addr add 192.0.2.1/32 dev lo", "link set bench0 up", "link set bench1 up",
                  "route add 198.51.100.0/24 dev bench0 src 192.0.2.1"]
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(script) + "\n",
                       text=True, check=True)
        kinds = [kind] if kind else ["gre", "wireguard"]
        usable = [k for k in kinds if _kernel_has(k, ns)]
        if not usable:
            raise click.ClickException(
                f"this kernel has no {' or '.join(kinds)}: run the bench under the "
                "distribution kernel (python -m argoctl.lab.vm -- .venv/bin/argoctl bench up)")
        kind = usable[0]
        with tempfile.TemporaryDirectory(prefix="argoctl-bench-") as tmp:
            keyfile = os.path.join(tmp, "bench.key")
            keys.write_key_pair(keyfile)
            path = os.path.join(tmp, "bench.toml")
            with open(path, "w") as f:
                f.write(_config_text(kind, peers, prefixes, keyfile))
            t0 = time.monotonic()
            cfg = config.load(path)
            load_s = time.monotonic() - t0
            run_dir = os.path.join(tmp, "run")
            out = []
            for phase in ("up", "noop"):
                t0 = time.monotonic()
                ctx = apply.up(cfg, ns=ns, run_dir=run_dir)
                secs = time.monotonic() - t0
                out.append({"bench": "up", "phase": phase, "tunnel": kind, "peers": peers,
                            "prefixes": sum(len(d.prefixes) for d in cfg.destinations),
                            "seconds": round(secs, 3), "config_load_seconds": round(load_s, 3),
                            "ops": len(ctx.ops), "writes": ctx.result.writes,
                            "netlink_writes": ctx.result.netlink_writes,
                            "nft_writes": ctx.result.nft_writes,
                            "sysctl_writes": ctx.result.sysctl_writes})
            t0 = time.monotonic()
            ctx = apply.down(ns=ns, run_dir=run_dir)
            out.append({"bench": "up", "phase": "down", "tunnel": kind, "peers": peers,
                        "seconds": round(time.monotonic() - t0, 3), "ops": len(ctx.ops),
                        "writes": ctx.result.writes})
            return out
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@click.command("up")
@click.option("--peers", type=click.IntRange(1, 254), default=100, show_default=True)
@click.option("--prefixes", type=click.IntRange(0), default=10000, show_default=True)
@click.option("--tunnel", type=click.Choice(["gre", "wireguard"]),
              help="tunnel kind (default: GRE if the kernel has it, else WireGuard)")
@click.option("--json", "as_json", is_flag=True, help="JSON lines (the default output anyway)")
def bench_up(peers: int, prefixes: int, tunnel: str | None, as_json: bool) -> None:
    """Time `up` (and the no-op re-apply) for PEERS tunnels and PREFIXES destination prefixes."""
    from argoctl.bench.report import emit
    for record in run(peers, prefixes, tunnel):
        emit(record)
