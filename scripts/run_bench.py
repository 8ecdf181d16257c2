"""`make bench`: every `argoctl bench` subcommand, JSON lines into one file.

Benches listed in VM_BENCHES need GRE/WireGuard/netem: on a kernel without them they
all run in one virtme-ng VM of the distribution kernel (argoctl.lab.vm). Add a bench's
name there when it needs tunnels or netem; everything else runs on the host.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from argoctl.lab import vm  # noqa: E402
# the CLI loads `bench` lazily (argoctl/cli.py LAZY): take the group from its module
from argoctl.bench.cli import bench  # noqa: E402

VM_BENCHES = {"up", "datapath-throughput", "peers", "reroute"}
# Sizes pinned for `make bench` on the host, where a bench's defaults are not what
# it should run (fleetsim: a ramp of H hosts x 100k destinations, ~2-4 min on 2 cores).
BENCH_ARGS = {"fleetsim": ["--hosts", "1,2,4", "--destinations", "100000", "--seconds", "8"]}
# Benches run once more with other arguments: fleet's lab (real packets, 12 hosts)
# and its simulation (--sim: modelled latencies, the 24 x 8 fleet), side by side.
MORE_RUNS = {"fleet": [["--sim"]]}
RAW = ROOT / "build" / "bench"


def json_lines(text: str) -> list[str]:
    """The JSON-object lines of a bench's output (anything else is commentary)."""
    out = []
    for line in text.splitlines():
        try:
            if isinstance(json.loads(line), dict):
                out.append(line)
        except ValueError:
            pass
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench-results.json")
    parser.add_argument("names", nargs="*", help="subcommands (default: all)")
    ns = parser.parse_args()
    names = ns.names or sorted(bench.commands)
    unknown = set(names) - set(bench.commands)
    if unknown:
        parser.error(f"unknown bench(es): {', '.join(sorted(unknown))}")
    argoctl = [sys.executable, "-m", "argoctl", "bench"]
    in_vm = [n for n in names if n in VM_BENCHES and vm.use_vm()]
    RAW.mkdir(parents=True, exist_ok=True)
    lines, failed = [], []
    for name in names:
        if name in in_vm:
            continue
        for args in [BENCH_ARGS.get(name, []), *MORE_RUNS.get(name, [])]:
            print(f"== bench {' '.join([name, *args])}", flush=True)
            proc = subprocess.run(argoctl + [name, *args], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True)
            sys.stdout.write(proc.stdout)
            lines += json_lines(proc.stdout)
            if proc.returncode:
                failed.append(" ".join([name, *args]))
    if in_vm:
        # One boot for all of them; each writes its own file in the shared tree.
        print(f"== bench {' '.join(in_vm)} in a VM", flush=True)
        script = "; ".join(
            f"{' '.join(argoctl + [n])} > {RAW / (n + '.jsonl')} || echo {n} >> {RAW / 'failed'}"
            for n in in_vm)
        (RAW / "failed").unlink(missing_ok=True)
        rc = vm.run(["sh", "-c", script], cwd=str(ROOT), rwdirs=[str(ROOT)])
        for n in in_vm:
            f = RAW / (n + ".jsonl")
            text = f.read_text() if f.exists() else ""
            sys.stdout.write(text)
            lines += json_lines(text)
        if rc or (RAW / "failed").exists():
            failed += (RAW / "failed").read_text().split() if (RAW / "failed").exists() \
                else ["vm"]
    Path(ns.out).write_text("".join(line + "\n" for line in lines))
    print(f"== {len(lines)} results in {ns.out}" + (f"; failed: {' '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
