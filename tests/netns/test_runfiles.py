"""Damaged run files (issue 14 item 6, issue 15's corrupt run files): each file
of the state directory truncated, garbled, missing a field or holding a wrong
type, in turn. Then `status`, `explain`, `fleet status` and `up` over it, then
`argoctl run` (as a process, as systemd runs it) and `down`. None prints a traceback; each names the
file and says what it did instead; `run` starts anyway, and `down` leaves the
namespace as it was before argoctl.

Host kernel: edge of the standard lab with a direct-only config (no tunnels),
edge's forwarding turned off first so that `up` has sysctl values to save. The
short commands run in-process (click's runner, this thread inside edge's
namespace), `run` as a process with --netns (tests/netns/test_daemon_cli.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from argoctl import cli, home, mac, names, netlink, runfiles
from argoctl import daemon as dmn
from argoctl.lab import loop as looplab

STATE, ROUTING, SAVED, INTENT, LOCK = (names.STATE_FILE, names.ROUTING_FILE,
                                       names.SAVED_SYSCTLS_FILE, names.INTENT_FILE,
                                       names.LOCK_FILE)


def _truncated(raw: bytes) -> bytes:
    return raw[:len(raw) // 2]


def _garbled(raw: bytes) -> bytes:
    b = bytearray(raw)
    for i in range(0, len(b), 5):
        b[i] = (0xFF, 0x00, ord("}"))[i % 3]
    return bytes(b)


def _edit(change):
    def damage(raw: bytes) -> bytes:
        doc = json.loads(raw)
        change(doc)
        return json.dumps(doc).encode()
    return damage


def _path_entry(doc) -> dict:
    return doc["destinations"]["origin"]["paths"]["direct"]


# file -> {form: raw -> damaged raw}: the fields readers use, gone or of another type
DAMAGE = {
    STATE: {"missing-field": _edit(lambda d: _path_entry(d).pop("state")),
            "wrong-type": _edit(lambda d: _path_entry(d).update(loss="none"))},
    ROUTING: {"missing-field": _edit(lambda d: d.pop("fwmark_mask")),
              "wrong-type": _edit(lambda d: d.update(table_base="7200"))},
    SAVED: {"wrong-type": _edit(lambda d: d.update({"net/ipv4/ip_forward": 0}))},
    INTENT: {"missing-field": _edit(lambda d: d.pop("clsact")),
             "wrong-type": _edit(lambda d: d.update(clsact=["to-client"]))},
    LOCK: {"missing-field": lambda raw: raw.split()[0] + b"\n",
           "wrong-type": lambda raw: b"pid run\n"},
}
for forms in DAMAGE.values():
    forms.update(truncated=_truncated, garbled=_garbled)
# Every file under `run` and `down` twice: a torn form and a field missing or of the
# wrong type (each form on some file); tests/unit/test_runfiles.py puts every form
# of every file through its reader.
CASES = [(ROUTING, "garbled"), (ROUTING, "wrong-type"), (SAVED, "truncated"),
         (SAVED, "wrong-type"), (INTENT, "garbled"), (INTENT, "missing-field"),
         (LOCK, "truncated"), (LOCK, "wrong-type"), (STATE, "truncated"),
         (STATE, "missing-field")]
WARNED_AT_UP = (ROUTING, SAVED, INTENT)    # up, run and down read (and say) these


@pytest.fixture(scope="module")
def env(lab_module, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runfiles")
    key = str(tmp / "probe.key")
    mac.write_key(key)
    cfg = tmp / "edge.toml"
    cfg.write_text(f"""[node]
name = "edge"
address = "192.0.2.1"
tunnel_address = "198.51.100.129"
steer_interfaces = ["to-client"]

[[destination]]
name = "origin"
prefixes = ["203.0.113.0/24"]
paths = ["direct"]
probe = {{ kind = "udp", target = "{looplab.ORIGIN}", port = {looplab.RESPONDER_PORT} }}

[policy]
probe_interval_ms = 100
responder_key_file = "{key}"
metrics_listen = ""
""")
    edge = lab_module["edge"]
    edge.run(["sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"],
             check=True)
    responder = looplab.ResponderThread(lab_module["origin"], mac.read_key(key))
    e = {"edge": edge, "ns": edge.netns, "cfg": str(cfg), "tmp": tmp, "procs": []}
    with netlink.netns(e["ns"]):
        e["pin"] = home.pin_dir()              # where up/run/down put it in this namespace
    e["before"] = _namespace(e)
    yield e
    for p in e["procs"]:
        if p.poll() is None:
            p.kill()
            p.wait()
    responder.stop()
    _cli(e, str(tmp / "cleanup"), "down")


def _cli(env, run_dir, *args):
    with netlink.netns(env["ns"]):
        r = CliRunner().invoke(cli.cli, list(args), env={"ARGOCTL_RUN_DIR": run_dir})
    # never a traceback: a clean exit, never an exception escaping
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.output)
    assert "Traceback" not in r.output, (args, r.output)
    return r


def _namespace(env) -> dict:
    """What argoctl may touch in edge: rules, qdiscs and filters, nft, forwarding
    and accept_ra sysctls, pins."""
    edge = env["edge"]
    run = lambda *argv: edge.run(list(argv), check=True).stdout   # noqa: E731
    sysctls = run("sh", "-c", "grep -r . /proc/sys/net/ipv4/ip_forward "
                  "/proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv6/conf/*/forwarding "
                  "/proc/sys/net/ipv6/conf/*/accept_ra")
    return {"rules": run("ip", "rule") + run("ip", "-6", "rule"),
            "qdiscs": run("tc", "qdisc", "show"),
            "filters": run("tc", "filter", "show", "dev", "to-client", "ingress"),
            "nft": run("nft", "list", "ruleset"), "sysctls": sysctls,
            "pinned": os.path.exists(env["pin"])}


def _restore_sysctls(env) -> None:
    """The values of before, in the order grep listed them (global knobs first)."""
    script = "; ".join(f"echo {line.rsplit(':', 1)[1]} > {line.rsplit(':', 1)[0]}"
                       for line in env["before"]["sysctls"].splitlines())
    env["edge"].run(["sh", "-c", script], check=True)
    assert _namespace(env)["sysctls"] == env["before"]["sysctls"]


def _state_dir(env, run_dir) -> str:
    with netlink.netns(env["ns"]):
        return home.locate(None, run_dir).state_dir    # where every command looks


def _damage(env, run_dir, name, how) -> tuple[str, bytes]:
    path = os.path.join(_state_dir(env, run_dir), name)
    with open(path, "rb") as f:
        raw = f.read()
    assert raw, path
    damaged = DAMAGE[name][how](raw)
    with open(path, "wb") as f:
        f.write(damaged)
    return path, damaged


def _damage_again(env, run_dir, name, how, damaged: bytes) -> None:
    """The same damage again if the last command replaced the file."""
    with open(os.path.join(_state_dir(env, run_dir), name), "rb") as f:
        if f.read() != damaged:
            _damage(env, run_dir, name, how)


def _run(env, run_dir) -> str:
    """`argoctl run` starts (its state says running, its pid, direct measured up);
    SIGTERM; its stderr."""
    p = subprocess.Popen([sys.executable, "-m", "argoctl", "run", "-c", env["cfg"], "--netns",
                          env["ns"], "--cgroup", "none"], stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "ARGOCTL_RUN_DIR": run_dir})
    env["procs"].append(p)
    path = dmn.state_path(run_dir, env["ns"])
    end, doc = time.monotonic() + 90, None
    while time.monotonic() < end and p.poll() is None:
        try:
            doc = dmn.read_state(path)
        except (FileNotFoundError, ValueError):
            doc = None
        if doc and doc["running"] and doc["pid"] == p.pid and \
                doc["destinations"]["origin"]["paths"].get("direct", {}).get("state") == "up":
            break
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0 and "Traceback" not in err, err
    assert doc is not None and doc["pid"] == p.pid and _path_entry(doc)["state"] == "up", \
        (doc, err)
    with open(path) as f:
        env["state_text"] = f.read()    # what the daemon leaves (running: false)
    return err


def test_every_writer_goes_through_one_atomic_helper(env, monkeypatch):
    """`up` writes every file of its state directory through runfiles.write_atomic
    (temp file, fsync, rename, fsync of the directory), and no temp file stays."""
    written, real = [], runfiles.write_atomic

    def spy(path, text, *a, **kw):
        written.append(os.path.basename(path))
        return real(path, text, *a, **kw)
    monkeypatch.setattr(runfiles, "write_atomic", spy)
    run_dir = str(env["tmp"] / "writers")
    r = _cli(env, run_dir, "up", "-c", env["cfg"])
    assert r.exit_code == 0, r.output
    files = sorted(os.listdir(_state_dir(env, run_dir)))
    assert files == sorted([INTENT, LOCK, ROUTING, SAVED]), files
    assert set(files) <= set(written), written
    assert _cli(env, run_dir, "down").exit_code == 0
    assert os.listdir(_state_dir(env, run_dir)) == [LOCK]
    assert _namespace(env) == env["before"]


@pytest.mark.parametrize("name,how", CASES)
def test_a_damaged_run_file_under_status_explain_run_and_down(env, name, how):
    run_dir = str(env["tmp"] / f"run-{name}-{how}")
    r = _cli(env, run_dir, "up", "-c", env["cfg"])
    assert r.exit_code == 0, r.output
    if name == STATE:                # the state file a daemon left (an earlier case's run)
        if "state_text" in env:
            runfiles.write_atomic(dmn.state_path(run_dir, env["ns"]), env["state_text"])
        else:
            _run(env, run_dir)
    path, damaged = _damage(env, run_dir, name, how)

    st = _cli(env, run_dir, "status", "--json")
    assert st.exit_code == 0, st.output
    problems = json.loads(st.stdout)["problems"]
    if name in (STATE, ROUTING):     # said, never silently left out
        assert [p for p in problems if p.startswith(path + ": ")], problems
    else:
        assert problems == []
    ex = _cli(env, run_dir, "explain", "origin")
    if name == STATE:
        assert ex.exit_code == 1 and ex.stderr.startswith(f"argoctl explain: {path}: "), \
            ex.stderr
    else:
        assert ex.exit_code == 1 and "no live state" in ex.stderr    # (no run yet)
    fl = _cli(env, run_dir, "fleet", "status")
    assert fl.exit_code == 1 and (path in fl.stderr if name == STATE else True), fl.stderr

    up = _cli(env, run_dir, "up", "-c", env["cfg"])
    assert up.exit_code == 0, up.output
    if name in WARNED_AT_UP:
        assert f"argoctl up: warning: {path}: " in up.stderr, up.output
    _damage_again(env, run_dir, name, how, damaged)
    err = _run(env, run_dir)         # starts anyway over the damaged file
    if name != LOCK:                 # (a lock's content is only for messages)
        assert f'"event": "run_file_damaged", "message": "{path}: ' in err, err

    _damage_again(env, run_dir, name, how, damaged)
    dn = _cli(env, run_dir, "down")
    assert dn.exit_code == 0, dn.output
    if name in WARNED_AT_UP:
        assert f"argoctl down: warning: {path}: " in dn.stderr, dn.output
    after = _namespace(env)
    if name == SAVED:                # the values from before are lost: forwarding stays on
        assert "down leaves forwarding as it finds it" in dn.stderr
        assert "net.ipv4.ip_forward = 1" in env["edge"].run(["sysctl", "net.ipv4.ip_forward"],
                                                            check=True).stdout
        _restore_sysctls(env)        # (for the next cases)
        after.pop("sysctls")
        before = {k: v for k, v in env["before"].items() if k != "sysctls"}
    else:
        before = env["before"]
    assert after == before
    assert os.listdir(_state_dir(env, run_dir)) == [LOCK]
