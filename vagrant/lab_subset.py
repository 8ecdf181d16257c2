"""Write one VM's config for a lab with fewer relays than the standard one
(ARGOCTL_VMS=edge,relay1,origin: `make vagrant-lab`), with the namespace
demo's quick-failover policy. vagrant/lab-config.sh runs it in place of
`argoctl lab gen-configs` when ARGOCTL_RELAYS names a subset.

    python lab_subset.py HOST TUNNEL LAN_INTERFACE(-) OUT_DIR SEED_FILE RELAYS(a,b)
"""

import sys
from dataclasses import replace

from argoctl.lab import configs as labconfig
from argoctl.lab.env import POLICY


def main(host: str, kind: str, lanif: str, out: str, seed_file: str, relays: str) -> int:
    names = [r for r in relays.split(",") if r]
    topo = labconfig.default_topology("vagrant")
    known = [r.name for r in topo.relays]
    unknown = sorted(set(names) - set(known))
    if unknown:
        print(f"lab_subset: unknown relay(s) {', '.join(unknown)} (known: {', '.join(known)})",
              file=sys.stderr)
        return 2
    topo = replace(topo, relays=tuple(r for r in topo.relays if r.name in names),
                   policy=tuple(sorted(POLICY.items())))
    if lanif != "-":
        topo = labconfig.with_lan_interface(topo, lanif)
    if host not in (*(h.name for h in topo.hosts), topo.origin_name):
        print(f"lab_subset: {host} is not an argoctl host of this lab", file=sys.stderr)
        return 2
    labconfig.write_lab_configs(out, topo, kind, only=host, seed=labconfig.read_seed(seed_file))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
