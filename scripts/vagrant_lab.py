"""Play a lab scenario across the Vagrant VMs and print `make demo`'s table.

Run by scripts/vagrant-lab.sh inside the lab's own network namespace, where
libvirtd and its networks live: a link between two VMs is a libvirt network,
i.e. a bridge here, and a blackhole is an nftables bridge rule dropping every
frame that bridge forwards (neither VM is touched, as when a real path between
two sites goes dark). The edge VM runs the traffic (vagrant/lab_vm.py) and
reports the window's numbers; this side keeps the scenario's clock.

    python scripts/vagrant_lab.py [--scenario outage] [--rate 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time

from argoctl.lab.demo import summary_table
from argoctl.lab.scenario import load_scenario

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAGRANT_DIR = os.path.join(REPO, "vagrant")
NFT_TABLE = "argoctl_vlab"
EDGE_CMD = ("sudo /opt/argoctl/venv/bin/python /opt/argoctl/src/vagrant/lab_vm.py traffic "
            "--rate {rate:g} --settle-timeout {settle:g} --description '{description}'")


def run(argv: list[str], **kw) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout


def bridge_of(a: str, b: str) -> str:
    """The bridge of the libvirt network joining VMs a and b (the Vagrantfile
    names it argoctl-<a>-<b> in its LINKS order)."""
    nets = run(["virsh", "-q", "net-list", "--all", "--name"]).split()
    for name in (f"argoctl-{a}-{b}", f"argoctl-{b}-{a}"):
        if name in nets:
            for line in run(["virsh", "net-info", name]).splitlines():
                if line.startswith("Bridge:"):
                    return line.split()[1]
    raise SystemExit(f"vagrant_lab: no libvirt network joins {a} and {b} (have: {nets})")


def ports_of(bridge: str) -> list[str]:
    """The VMs' tap devices on `bridge`."""
    out = run(["ip", "-o", "link", "show", "master", bridge])
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line]


def set_blackholes(bridges: set[str]) -> None:
    """Exactly `bridges` drop every frame they forward (one table, rewritten
    whole). Matched by the ports' names: this kernel's nftables has no
    bridge-name match (meta ibrname is not supported here)."""
    rules = "".join(f'    iifname "{port}" drop\n' for br in sorted(bridges)
                    for port in ports_of(br))
    script = (f"table bridge {NFT_TABLE}\ndelete table bridge {NFT_TABLE}\n"
              f"table bridge {NFT_TABLE} {{\n  chain forward {{\n"
              f"    type filter hook forward priority 0; policy accept;\n{rules}  }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise SystemExit(f"vagrant_lab: no word from edge in {timeout:g} s")
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"vagrant_lab: edge's traffic script ended (exit {proc.wait()})")
    return line.strip()


def play(scenario, rate: float, ssh_config: str, settle_timeout: float) -> dict:
    for st in scenario.steps:
        if not (st.blackhole or st.clear) or st.direction != "both":
            raise SystemExit(f"vagrant_lab: step '{st.describe()}': the VM lab plays blackholes "
                             "both ways only (this kernel has no netem for delay or loss)")
    bridges = {frozenset((st.a, st.b)): bridge_of(st.a, st.b) for st in scenario.steps}
    cmd = EDGE_CMD.format(rate=rate, settle=settle_timeout,
                          description=scenario.description.replace("'", ""))
    proc = subprocess.Popen(["ssh", "-F", ssh_config, "edge", cmd], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    dark: set[str] = set()
    try:
        line = read_line(proc, settle_timeout + 60)
        if line != "READY":
            raise SystemExit(f"vagrant_lab: edge said {line!r}, not READY")
        t0 = time.monotonic()
        print(f"vagrant_lab: scenario {scenario.name}: {scenario.description}", flush=True)
        for st in scenario.steps:
            time.sleep(max(0.0, t0 + st.at - time.monotonic()))
            br = bridges[frozenset((st.a, st.b))]
            (dark.discard if st.clear else dark.add)(br)
            set_blackholes(dark)
            print(f"[{scenario.name} t={time.monotonic() - t0:4.1f}s] step: {st.describe()} "
                  f"(bridge {br})", flush=True)
        time.sleep(max(0.0, t0 + scenario.duration - time.monotonic()))
        dark.clear()
        set_blackholes(dark)
        proc.stdin.write("END\n")
        proc.stdin.flush()
        result = json.loads(read_line(proc, 120))
    finally:
        if dark:
            set_blackholes(set())
        subprocess.run(["nft", "delete", "table", "bridge", NFT_TABLE],
                       capture_output=True)
        if proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    for sw in result["switches"]:
        print(f"[{scenario.name} t={sw['at_s']:4.1f}s] switch {sw['from']} -> {sw['to']}: "
              f"{sw['reason']}", flush=True)
    return result


MEMORY_CMD = ("sh -c 'free -m | sed -n 2p; for u in argoctl argoctl-responder argoctl-lab-echo; do "
              "f=/sys/fs/cgroup/system.slice/$u.service/memory.peak; "
              "[ -r $f ] && echo $u peak $(( $(cat $f) / 1048576 )) MiB; done; true'")


def memory(ssh_config: str, vms: list[str]) -> dict:
    """Each VM's memory after the run: `free -m`'s Mem line and the peak of
    argoctl's units (cgroup memory.peak): what a smaller VM would have to hold."""
    out = {}
    for vm in vms:
        r = subprocess.run(["ssh", "-F", ssh_config, vm, MEMORY_CMD], capture_output=True,
                           text=True, timeout=120)
        out[vm] = r.stdout.strip().splitlines()
        for line in out[vm]:
            print(f"vagrant_lab: {vm}: {line}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="outage")
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--settle-timeout", type=float, default=900.0,
                    help="How long edge may take to use direct with every path up.")
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args(argv)
    scenario = load_scenario(args.scenario)
    ssh_config = os.path.join(os.environ.get("VAGRANT_DOTFILE_PATH", VAGRANT_DIR), "ssh-config")
    vms = os.environ.get("ARGOCTL_VMS", "edge,relay1,origin").split(",")
    with open(ssh_config, "w") as f:
        f.write(run(["vagrant", "ssh-config", *vms], cwd=VAGRANT_DIR))
    started = time.monotonic()
    result = play(scenario, args.rate, ssh_config, args.settle_timeout)
    summary = {"demo": "vagrant", "rate_per_s": args.rate, "vms": vms,
               "wall_s": round(time.monotonic() - started, 1),
               "scenarios": {scenario.name: result}, "memory": memory(ssh_config, vms)}
    from rich.console import Console
    Console(width=150).print(summary_table(summary))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(summary, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
