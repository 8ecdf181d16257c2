"""`argoctl demo --json` headless, as `make demo` runs it: the summary must show
argoctl keeping requests alive through an outage of the direct path, faster
than direct-only through a brownout (both without fleet mode), and then, in
fleet mode (a nats-server in the lab, agents on relay1 and relay2, relay1 over
GRE and relay2 over WireGuard), reaching the origin through the one relay that
still can, all measured in the same run. Then nothing of the lab may be left."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

import kit

from argoctl.lab import topo
from argoctl.lab.demo import demo


def test_demo_json_summary_shows_requests_and_latency_saved():
    # In-process (the CLI path of `make demo`, minus a new Python process).
    result = CliRunner().invoke(demo, ["--json", "--plain", "--rate", "20"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(summary, indent=1))          # the figures, with -s
    outage, brownout = summary["scenarios"]["outage"], summary["scenarios"]["brownout"]

    assert outage["mode"] == brownout["mode"] == "local", summary
    assert outage["argoctl"]["requests"] >= 200, outage
    assert outage["argoctl"]["success_pct"] >= 99.0, outage
    # The outage covers 10 of its 18 s: direct-only loses about half.
    assert outage["direct_only"]["success_pct"] <= 80.0, outage
    assert outage["requests_saved"] > 0.2 * outage["direct_only"]["requests"], outage
    assert any(s["from"] == "direct" for s in outage["switches"]), outage

    assert brownout["argoctl"]["median_ms"] < brownout["direct_only"]["median_ms"], brownout
    assert brownout["latency_saved_ms"] > 0, brownout

    # fleet: only relay2 reaches the origin for 10 of 18 s; the edge probes direct
    # and relay1 (k = 1) and knows relay2 from its agent's leg on the lab's bus
    f = kit.check_fleet_scenario(summary["scenarios"]["fleet"])
    # real tunnels of both kinds, read from the edge's kernel: the Orpheus relay
    # is reached over WireGuard
    assert f["tunnels"] == {"relay1": "gre", "relay2": "wireguard"}, f
    # the relays' datapaths compiled side by side before their daemons, which adopted them
    assert summary["relay_datapaths"] == {"relay1": "adopted", "relay2": "adopted"}, summary

    assert not [n for n in topo.list_namespaces() if n.startswith(f"argodemo{os.getpid()}")]
    assert not [p for p in os.listdir("/sys/fs/bpf")
                if p.startswith(f"argoctl-argodemo{os.getpid()}-")]
