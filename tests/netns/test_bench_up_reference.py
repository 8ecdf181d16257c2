"""`argoctl bench up`'s floor: the `ip -batch` lines must write what `up` writes.
The host kernel has no GRE, so only the rules are applied here (the VM runs the
whole bench); rules are where a family can silently go wrong."""

from __future__ import annotations

import os
import subprocess

from argoctl import config, keys, netlink, plan
from argoctl.bench import up as bench_up


def _rules(ns: str, family: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, family, "rule", "show"], capture_output=True,
                         text=True, check=True).stdout
    return [line.split(":", 1)[1].split() for line in out.splitlines() if "fwmark" in line]


def test_reference_batches_write_every_rule_in_its_family(tmp_path):
    from pyroute2 import IPRoute
    ns = f"{bench_up.NS_PREFIX}ref{os.getpid()}"
    bench_up._ns(ns)
    try:
        keyfile = str(tmp_path / "k")
        keys.write_key_pair(keyfile)
        path = tmp_path / "bench.toml"
        path.write_text(bench_up._config_text("gre", 3, 30, keyfile))
        cfg = config.load(str(path))
        with netlink.netns(ns), IPRoute() as ipr:
            want = plan.desired(cfg, netlink.KernelEnv(ipr))
        lines, rules6 = bench_up.ip_batch(want)
        # the library's share is measured on the same requests as the reference's
        _, requests, _ = bench_up.library_seconds(plan.diff(plan.State(), want), [])
        assert requests == len(lines) + len(rules6) > 0
        rules4 = [line for line in lines if line.startswith("rule ")]
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(rules4) + "\n",
                       text=True, check=True)
        subprocess.run(["ip", "-n", ns, "-6", "-batch", "-"], input="\n".join(rules6) + "\n",
                       text=True, check=True)
        for fam, flag in ((4, "-4"), (6, "-6")):
            got = sorted((int(r[r.index("fwmark") + 1].split("/")[0], 16), r[-1])
                         for r in _rules(ns, flag))
            exp = sorted((0, "blackhole") if r.action == "blackhole" else
                         (r.mark, "main" if r.table == 254 else str(r.table))
                         for r in want.rules if r.family == fam)
            # 3 paths + the direct one, and the rule that drops marked traffic with no table
            assert got == exp and len(exp) == 5, (fam, got, exp)
        # the path tables' drop routes need no device: written and read back here too
        drops = [line for line in lines if line.startswith("route add blackhole")]
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(drops) + "\n",
                       text=True, check=True)
        for fam, flag in ((4, "-4"), (6, "-6")):
            shown = subprocess.run(["ip", "-n", ns, flag, "route", "show", "table", "all",
                                    "type", "blackhole"], capture_output=True, text=True,
                                   check=True).stdout.splitlines()
            exp = [r for r in want.routes if r.family == fam and r.type == "blackhole"]
            assert len(shown) == len(exp) == 3, (fam, shown, exp)
            assert all(f"metric {exp[0].metric}" in line for line in shown), shown
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
