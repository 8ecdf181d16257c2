"""The demo's fleet scenario, then the outage, on the host kernel (stand-in
paths, no tunnels): the demo's lab starts without fleet mode and switches to it
for the fleet scenario only (a nats-server in a lab namespace, agents on relay1
and relay2, the edge's daemon reloaded with [fleet], k = 1), then back for the
outage. For 10 of 18 s only relay2 reaches the origin; the edge learns it from
relay2's published leg and its clients' requests get there, while the
direct-only baseline fails. Then nothing of the lab may be left.

(`make demo` plays outage, brownout, fleet: tests/integration/test_demo.py.
Here the fleet scenario comes first so that leaving fleet mode is exercised
too. The outage's figures mean nothing on stand-in paths, whose replies come
back over the blackholed direct link, and without netem the edge has no reason
to leave relay2 for direct afterwards: hence the short settle time.)"""

from __future__ import annotations

import json
import os

from argoctl.lab import topo
from argoctl.lab.demo import run_demo


def test_demo_switches_to_fleet_mode_for_the_fleet_scenario_only():
    # this kernel, stand-in paths
    summary = run_demo(("fleet", "outage"), rate=20, tunnels="none", live=False,
                       settle_timeout=20)
    print(json.dumps(summary, indent=1))          # the figures, with -s
    fleet = summary["scenarios"]["fleet"]
    assert fleet["mode"] == "fleet", fleet
    assert fleet["argoctl"]["success_pct"] >= 95.0, fleet
    assert fleet["direct_only"]["success_pct"] <= 80.0, fleet
    assert fleet["requests_saved"] > 0.2 * fleet["direct_only"]["requests"], fleet
    f = fleet["fleet"]
    assert set(f["members"]) == {"edge", "relay1", "relay2"}, f
    assert f["via"] == "relay2" and f["reach"].get("relay2") == "up", f
    assert f.get("reach", {}).get("relay1") != "up", f
    assert f["reach_s"] is not None and f["reach_s"] < 10, f
    # k = 1: before the outage the edge probed direct and one relay end to end,
    # and scored the other from the bus (relay's published leg + tunnel leg)
    before = f["edge_paths_before"]
    assert before["direct"]["probed"] and before["direct"]["chosen"], before
    assert sorted(before[r]["how"] for r in ("relay1", "relay2")) == \
        ["composed", "end-to-end"], before
    assert f["tunnels"] == {}, f                  # stand-in paths: no tunnel devices
    assert set(summary["fleet_setup_s"]) == {"nats_s", "relay_agents_s", "edge_reload_s",
                                             "total_s"}, summary

    # back out of fleet mode: the outage is the single-host tool's (no agent)
    outage = summary["scenarios"]["outage"]
    assert outage["mode"] == "local" and "fleet" not in outage, outage
    assert outage["switches"], outage

    assert not [n for n in topo.list_namespaces() if n.startswith(f"argodemo{os.getpid()}")]
    assert not os.path.exists(f"/sys/fs/bpf/argoctl-argodemo{os.getpid()}-edge")
    assert not [p for p in os.listdir("/sys/fs/bpf")
                if p.startswith(f"argoctl-argodemo{os.getpid()}-")]
