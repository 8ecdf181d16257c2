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


def test_threaded_receive_gives_each_link_end_its_own_receive_thread():
    """The control bench's lab receives like separate hosts: every veth end has a
    threaded NAPI, and the agent's (edge's) threads are the ones returned."""
    import os
    from argoctl.bench.control import threaded_receive
    from argoctl.lab.topo import Topology

    with Topology.default(f"thr{os.getpid()}") as t:
        t.start()
        mine = threaded_receive(t, "edge")
        for link in t.links:
            for end in (link.a, link.b):
                out = end.host.run(["cat", f"/sys/class/net/{end.ifname}/threaded"], check=True)
                assert out.stdout.strip() == "1", (end.host.name, end.ifname)
        edge_ends = [e for link in t.links for e in (link.a, link.b) if e.host.name == "edge"]
        assert len(mine) >= len(edge_ends)
        for pid in mine:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            assert comm.startswith("napi/") and any(
                comm.startswith(f"napi/{e.ifname}-") for e in edge_ends), comm


def test_a_failed_loop_still_detaches_the_benchs_datapath(monkeypatch):
    """The bench pins its datapath under /sys/fs/bpf/argoctl-<lab>-edge: when the
    daemon loop dies mid-run the bench must say so and still remove the pins."""
    import os

    import pytest

    from argoctl.bench import control as bench_control
    from argoctl.daemon import Daemon, DaemonError

    def broken_round(self):
        raise RuntimeError("a bug in the loop")
    monkeypatch.setattr(Daemon, "_round", broken_round)
    pin = f"/sys/fs/bpf/argoctl-agc{os.getpid()}-edge"
    try:
        with pytest.raises(DaemonError, match="a bug in the loop"):
            bench_control._control_run(10, 2, 200, 1, 10)
        assert not os.path.exists(pin)
    finally:
        if os.path.isdir(pin):          # (the failure this test is for: clean up anyway)
            for name in os.listdir(pin):
                os.unlink(os.path.join(pin, name))
            os.rmdir(pin)
