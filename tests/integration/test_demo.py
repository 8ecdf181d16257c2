"""`argoctl demo --json` headless, as `make demo` runs it: the summary must show
argoctl keeping requests alive through an outage of the direct path, faster
than direct-only through a brownout, both measured in the same run.
Then nothing of the lab may be left."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from argoctl.lab import topo
from argoctl.lab.demo import demo


def test_demo_json_summary_shows_requests_and_latency_saved():
    # In-process (the CLI path of `make demo`, minus a new Python process).
    result = CliRunner().invoke(demo, ["--json", "--plain", "--rate", "20"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(summary, indent=1))          # the figures, with -s
    outage, brownout = summary["scenarios"]["outage"], summary["scenarios"]["brownout"]

    assert outage["argoctl"]["requests"] >= 200, outage
    assert outage["argoctl"]["success_pct"] >= 99.0, outage
    # The outage covers 10 of its 18 s: direct-only loses about half.
    assert outage["direct_only"]["success_pct"] <= 80.0, outage
    assert outage["requests_saved"] > 0.2 * outage["direct_only"]["requests"], outage
    assert any(s["from"] == "direct" for s in outage["switches"]), outage

    assert brownout["argoctl"]["median_ms"] < brownout["direct_only"]["median_ms"], brownout
    assert brownout["latency_saved_ms"] > 0, brownout

    assert not [n for n in topo.list_namespaces() if n.startswith(f"argodemo{os.getpid()}")]
    assert not os.path.exists(f"/sys/fs/bpf/argoctl-argodemo{os.getpid()}-edge")
