"""`argoctl bench control` as a user runs it: its own lab, one JSON line per
--targets. Small sizes: this checks what the bench measures, not the figure."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_control_probes_every_stream_and_shares_a_common_target():
    out = subprocess.run(
        [sys.executable, "-m", "argoctl", "bench", "control", "--destinations", "30",
         "--paths", "2", "--interval", "200", "--seconds", "2", "--targets", "30",
         "--targets", "1", "--json"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-3000:]
    apart, shared = (json.loads(line) for line in out.stdout.splitlines())
    # 30 destinations x 2 paths at 5 Hz: every path of every destination measured
    assert (apart["probe_targets"], apart["probe_streams"]) == (30, 60)
    assert (shared["probe_targets"], shared["probe_streams"]) == (1, 2)
    for rec in (apart, shared):
        assert rec["paths_up"] == 60, rec
        assert 0 < rec["cpu_percent_of_core"] < 200
    # about 300 results/s apart, 10/s shared (+-10% jitter, and a slow first round)
    assert 200 < apart["probe_results_per_s"] < 360, apart
    assert 5 < shared["probe_results_per_s"] < 13, shared
