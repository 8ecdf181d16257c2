"""`argoctl run` as a process (what systemd runs): single instance, decisions on
stderr as JSON lines, SIGTERM keeps the datapath, `--cleanup` removes it all.
Host kernel: a config with only the direct path (no tunnels), in lab namespaces."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from argoctl.lab import loop as looplab
import kit
from argoctl import daemon as dmn
from argoctl import mac
from argoctl.names import DEFAULT_RULE_PRIORITY_BASE
from argoctl.service import parse_line


@pytest.fixture
def env(lab, tmp_path):
    cfg, key = kit.direct_only_edge(tmp_path)
    responder = looplab.ResponderThread(lab["origin"], mac.read_key(key))
    e = {"lab": lab, "cfg": str(cfg), "run_dir": str(tmp_path / "run"),
         "pin": f"/sys/fs/bpf/argoctl-{lab['edge'].netns}", "ns": lab["edge"].netns,
         "procs": []}
    yield e
    for p in e["procs"]:
        if p.poll() is None:
            p.kill()
            p.wait()
    responder.stop()
    from argoctl import datapath
    datapath.detach(e["pin"], netns=e["ns"], cgroup=None)


def _run(env, *extra):
    p = subprocess.Popen([sys.executable, "-m", "argoctl", "run", "-c", env["cfg"], "--netns",
                          env["ns"], "--cgroup", "none", *extra],
                         stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "ARGOCTL_RUN_DIR": env["run_dir"]})
    env["procs"].append(p)
    return p


def _wait_state(env, pred, timeout=60):
    path = dmn.state_path(env["run_dir"], env["ns"])
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            doc = dmn.read_state(path)
            if pred(doc):
                return doc
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"state never matched: {path}")


def _our_rules(env) -> str:
    out = env["lab"]["edge"].run(["ip", "rule", "show"], check=True).stdout
    return "\n".join(l for l in out.splitlines() if l.startswith(f"{DEFAULT_RULE_PRIORITY_BASE}:"))


def test_run_logs_decisions_refuses_a_second_instance_and_keeps_the_datapath(env):
    p = _run(env)
    doc = _wait_state(env, lambda d: d["running"] and
                      d["destinations"]["origin"]["paths"].get("direct", {}).get("state") == "up")
    assert doc["pid"] == p.pid and doc["destinations"]["origin"]["choice"] == "direct"
    assert _our_rules(env), "up should have installed direct's fwmark rule"
    second = subprocess.run([sys.executable, "-m", "argoctl", "run", "-c", env["cfg"],
                             "--netns", env["ns"], "--cgroup", "none"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "ARGOCTL_RUN_DIR": env["run_dir"]})
    assert second.returncode == 1 and f"another argoctl run (pid {p.pid})" in second.stderr
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    events = [json.loads(m) for _, _, m in map(parse_line, err.splitlines()) if m[:1] == "{"]
    assert events[0]["event"] == "start" and events[0]["datapath"] == "compiled"
    doc = dmn.read_state(dmn.state_path(env["run_dir"], env["ns"]))
    assert not doc["running"]
    # hitless: the datapath, the rules and the last decision stay
    assert os.path.exists(os.path.join(env["pin"], "pathsets")) and _our_rules(env)
    p2 = _run(env, "--cleanup")
    _wait_state(env, lambda d: d["running"] and d["pid"] == p2.pid)
    p2.send_signal(signal.SIGTERM)
    _, err = p2.communicate(timeout=60)
    assert p2.returncode == 0, err
    start = json.loads(next(m for _, _, m in map(parse_line, err.splitlines()) if m[:1] == "{"))
    assert start["datapath"] == "adopted" and start["adopted_decisions"] == ["origin"]
    assert not os.path.exists(env["pin"]) and not _our_rules(env)
    assert not os.path.exists(dmn.state_path(env["run_dir"], env["ns"]))


def test_run_with_a_bad_key_file_changes_nothing(env, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(open(env["cfg"]).read().replace(
        'responder_key_file = "', f'responder_key_file = "{tmp_path}/missing-dir/'))
    p = subprocess.run([sys.executable, "-m", "argoctl", "run", "-c", str(bad), "--netns",
                        env["ns"], "--cgroup", "none"],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "ARGOCTL_RUN_DIR": env["run_dir"]})
    assert p.returncode == 2 and "missing-" in p.stderr
    assert not _our_rules(env) and not os.path.exists(env["pin"])


def _inside(env, *args):
    """An argoctl command the way an operator runs one in the node: `ip netns exec`
    (its own mount namespace, where /sys/fs/bpf is not the host's bpffs)."""
    return subprocess.run(["ip", "netns", "exec", env["ns"], sys.executable, "-m", "argoctl",
                           *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ARGOCTL_RUN_DIR": env["run_dir"]})


def _steering(env) -> str:
    return env["lab"]["edge"].run(["tc", "filter", "show", "dev", "to-client", "ingress"],
                                  check=True).stdout


def test_run_then_up_status_explain_and_down_see_one_datapath(env):
    p = _run(env)
    _wait_state(env, lambda d: d["running"] and
                d["destinations"]["origin"]["paths"].get("direct", {}).get("state") == "up")
    filters, pins = _steering(env), sorted(os.listdir(env["pin"]))
    assert "argoctl-steer_eth-" in filters and "pathsets" in pins
    # up while the daemon runs: refused, and no second datapath
    r = _inside(env, "up", "-c", env["cfg"])
    assert r.returncode == 1 and "`argoctl run` is running in this namespace" in r.stderr, r.stderr
    assert _steering(env) == filters and sorted(os.listdir(env["pin"])) == pins
    # status and explain find the daemon's datapath and state
    r = _inside(env, "status", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    name = re.search(r"argoctl-steer_eth-\d+", filters).group(0)     # the daemon's program
    assert data["datapath"]["loaded"] and data["datapath"]["filters"]["to-client"] == [name]
    assert data["choices"]["running"] and data["choices"]["destinations"]["origin"]["choice"] \
        == "direct"
    r = _inside(env, "explain", "origin", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["choice"] == "direct", r.stderr
    # down while it runs: refused too; after the daemon stops, down removes its pins
    r = _inside(env, "down")
    assert r.returncode == 1 and "`argoctl run` is running" in r.stderr, r.stderr
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=30)
    r = _inside(env, "down")
    assert r.returncode == 0, r.stderr
    assert "pin(s) removed" in r.stdout
    assert not [e for e in os.listdir("/sys/fs/bpf") if env["ns"] in e]
    assert "argoctl" not in _steering(env) and not _our_rules(env)


def _direct_up(d) -> bool:
    return d["running"] and \
        d["destinations"]["origin"]["paths"].get("direct", {}).get("state") == "up"


def test_run_puts_back_a_rule_deleted_behind_its_back_and_keeps_running(env):
    """The watch (argoctl/watch.py) in `argoctl run` as systemd runs it: direct's
    rule deleted under the daemon is seen at once (its rtnetlink event), the path
    marked down and logged, the rule put back, the path trusted again after the
    usual recovery; and the daemon outlives its periodic full checks (once, a
    helper those checks forked stopped it silently)."""
    p = _run(env)
    _wait_state(env, _direct_up)
    rule = _our_rules(env)
    t0 = time.monotonic()
    env["lab"]["edge"].run(["ip", "-4", "rule", "del", "priority",
                            str(DEFAULT_RULE_PRIORITY_BASE)], check=True)
    while _our_rules(env) != rule and time.monotonic() < t0 + 20:
        time.sleep(0.02)
    back = time.monotonic() - t0
    assert _our_rules(env) == rule, "the daemon did not put its rule back"
    print(f"\ndirect's rule put back after {back:.3f} s")
    _wait_state(env, _direct_up, timeout=30)
    time.sleep(12)                        # two periodic checks (WATCH_INTERVAL_S = 5)
    assert p.poll() is None, p.communicate()[1]
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    events = [json.loads(m) for _, _, m in map(parse_line, err.splitlines()) if m[:1] == "{"]
    # from the deletion event itself (before the check's dumps), then the check
    deleted = [e for e in events if e["event"] == "owned_object_deleted"]
    assert deleted and deleted[0]["paths_down"] == ["direct"], err
    changed = [e for e in events if e["event"] == "owned_state_changed"]
    assert changed and changed[0]["paths_down"] == ["direct"], err
    assert any("rule -4 priority 7200" in op for op in changed[0]["missing_or_changed"]), err
    assert [e for e in events if e["event"] == "repaired"], err
