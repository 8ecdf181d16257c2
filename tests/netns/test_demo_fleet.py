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

import kit
from argoctl.lab import topo
from argoctl.lab.demo import run_demo


def test_demo_switches_to_fleet_mode_for_the_fleet_scenario_only():
    # this kernel, stand-in paths
    summary = run_demo(("fleet", "outage"), rate=20, tunnels="none", live=False,
                       settle_timeout=20)
    print(json.dumps(summary, indent=1))          # the figures, with -s
    f = kit.check_fleet_scenario(summary["scenarios"]["fleet"])
    # k = 1: before the outage the edge probed direct and one relay end to end,
    # and scored the other from the bus (relay's published leg + tunnel leg)
    before = f["edge_paths_before"]
    assert before["direct"]["probed"] and before["direct"]["chosen"], before
    assert f["tunnels"] == {}, f                  # stand-in paths: no tunnel devices
    setup = summary["fleet_setup_s"]
    assert set(setup) == {"nats_s", "relay_agents_s", "relay_compile_s", "edge_reload_s",
                          "total_s"}, summary
    # the relays' datapaths compiled before their daemons started, which adopted them
    assert 0 < setup["relay_compile_s"] <= setup["relay_agents_s"], setup
    assert summary["relay_datapaths"] == {"relay1": "adopted", "relay2": "adopted"}, summary

    # back out of fleet mode: the outage is the single-host tool's (no agent)
    outage = summary["scenarios"]["outage"]
    assert outage["mode"] == "local" and "fleet" not in outage, outage
    assert outage["switches"], outage

    assert not [n for n in topo.list_namespaces() if n.startswith(f"argodemo{os.getpid()}")]
    assert not os.path.exists(f"/sys/fs/bpf/argoctl-argodemo{os.getpid()}-edge")
    assert not [p for p in os.listdir("/sys/fs/bpf")
                if p.startswith(f"argoctl-argodemo{os.getpid()}-")]
