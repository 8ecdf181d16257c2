"""`argoctl lab up|status|impair|down` on the host kernel: a persistent lab in its
own process (fwmark paths instead of GRE, nftables blackholes instead of netem),
poked from separate commands, and removed completely by `lab down`."""

from __future__ import annotations

import json
import os
import time

from click.testing import CliRunner

from argoctl.lab import cli as lab
from argoctl.lab import env, topo


def _status(runner) -> dict:
    res = runner.invoke(lab.lab, ["status", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _wait(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.5)
    return pred()


def test_lab_up_impair_status_down(monkeypatch):
    prefix = f"agt{os.getpid()}nlab"     # the leak check sees it; stale clean-up leaves it
    monkeypatch.setenv("ARGOCTL_VM", "never")
    monkeypatch.setenv("ARGOCTL_LAB_PREFIX", prefix)    # for the lab's own process
    monkeypatch.setattr(lab, "LAB_PREFIX", prefix)
    runner = CliRunner()
    try:
        res = runner.invoke(lab.lab, ["up", "--tunnels", "none"])
        assert res.exit_code == 0, res.output
        assert runner.invoke(lab.lab, ["up", "--tunnels", "none"]).exit_code != 0  # only one

        def via():
            d = _status(runner)["destinations"].get("origin", {})
            return d.get("choice"), {p: v["state"] for p, v in d.get("paths", {}).items()}
        st = _status(runner)
        assert {f"{prefix}-{h}" for h in ("client", "edge", "relay1", "relay2", "origin",
                                          "baseline")} == set(st["namespaces"])
        assert _wait(lambda: via()[1] and set(via()[1].values()) == {"up"}, 30), via()

        res = runner.invoke(lab.lab, ["impair", "edge", "origin", "--blackhole",
                                      "--direction", "a->b"])
        assert res.exit_code == 0 and "edge->origin blackholed" in res.output, res.output
        assert _wait(lambda: via()[0] in ("relay1", "relay2") and via()[1]["direct"] == "down",
                     20), via()

        res = runner.invoke(lab.lab, ["impair", "edge", "origin", "--clear"])
        assert res.exit_code == 0, res.output
        assert _wait(lambda: via()[1]["direct"] == "up", 30), via()

        bad = runner.invoke(lab.lab, ["impair", "client", "origin", "--loss", "5"])
        assert bad.exit_code != 0 and "no lab link client - origin" in bad.output
    finally:
        res = runner.invoke(lab.lab, ["down"])
    assert res.exit_code == 0 and "removed 6 namespaces" in res.output, res.output
    assert not [n for n in topo.list_namespaces() if n.startswith(prefix + "-")]
    assert not os.path.exists(os.path.join(env.LAB_STATE_DIR, f"{prefix}.json"))
    assert runner.invoke(lab.lab, ["status"]).exit_code != 0
