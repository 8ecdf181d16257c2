"""`argoctl demo --scenario fleet` on the host kernel (stand-in paths, no tunnels):
the demo's lab in fleet mode, a nats-server in a lab namespace, an agent on edge,
relay1 and relay2. For 10 of 18 s only relay2 reaches the origin; the edge learns
it from relay2's published leg and its clients' requests get there, while the
direct-only baseline fails. Then nothing of the lab may be left."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from argoctl.lab import topo
from argoctl.lab.demo import demo


def test_demo_fleet_scenario_reaches_the_origin_through_the_one_relay_that_can():
    result = CliRunner().invoke(demo, ["--scenario", "fleet", "--tunnels", "none", "--json",
                                       "--plain", "--rate", "20"],
                           env={"ARGOCTL_VM": "never"})      # this kernel, stand-in paths
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(summary, indent=1))          # the figures, with -s
    fleet = summary["scenarios"]["fleet"]
    assert fleet["argoctl"]["success_pct"] >= 95.0, fleet
    assert fleet["direct_only"]["success_pct"] <= 80.0, fleet
    assert fleet["requests_saved"] > 0.2 * fleet["direct_only"]["requests"], fleet
    f = fleet["fleet"]
    assert set(f["members"]) == {"edge", "relay1", "relay2"}, f
    assert f["via"] == "relay2" and f["reach"].get("relay2") == "up", f
    assert f.get("reach", {}).get("relay1") != "up", f
    assert f["reach_s"] is not None and f["reach_s"] < 10, f

    assert not [n for n in topo.list_namespaces() if n.startswith(f"argodemo{os.getpid()}")]
    assert not os.path.exists(f"/sys/fs/bpf/argoctl-argodemo{os.getpid()}-edge")
