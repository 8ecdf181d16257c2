"""`argoctl run` as systemd runs it (Type=notify, WatchdogSec=, ExecReload=kill -HUP):
the sd_notify datagrams on a socket of our own standing in for systemd's, journald
priority prefixes on every log line, and SIGHUP reloading the config: added and
removed destinations reach the maps, an invalid config is refused and the running
state stays. (Tunnels and traffic across a reload: tests/integration/test_reload.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from argoctl import daemon as dmn
from argoctl import maps
from argoctl.service import parse_line

BASE = """[node]
name = "edge"
address = "192.0.2.1"
tunnel_address = "198.51.100.129"

[[destination]]
name = "origin"
prefixes = ["203.0.113.0/24"]
paths = ["direct"]
{more}
[policy]
probe_interval_ms = 100
metrics_listen = ""
"""
BACKUP = """
[[destination]]
name = "backup"
prefixes = ["198.51.100.192/26", "2001:db8:5::/48"]
paths = ["direct"]
"""


@pytest.fixture
def svc(topo, tmp_path):
    h = topo.add_host("svc", loopback="192.0.2.1")
    topo.start()
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    cfg = tmp_path / "edge.toml"
    cfg.write_text(BASE.format(more=""))
    env = {**os.environ, "NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "2000000",
           "ARGOCTL_LOG_FORMAT": "journal", "ARGOCTL_RUN_DIR": str(tmp_path / "run")}
    pin = f"/sys/fs/bpf/argoctl-{h.netns}"
    p = subprocess.Popen([sys.executable, "-m", "argoctl", "run", "-c", str(cfg), "--netns",
                          h.netns, "--cgroup", "none", "--cleanup"],
                         stderr=subprocess.PIPE, text=True, env=env)
    s = {"host": h, "sock": sock, "cfg": cfg, "proc": p, "pin": pin,
         "state": dmn.state_path(str(tmp_path / "run"), h.netns), "got": []}
    yield s
    if p.poll() is None:
        p.kill()
        p.wait()
    sock.close()
    from argoctl import datapath
    datapath.detach(pin, netns=h.netns, cgroup=None)


def wait_for(s, field: str, timeout: float = 120) -> list[str]:
    """Datagrams until one holds `field` (e.g. READY=1); returns all seen."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert s["proc"].poll() is None, s["proc"].stderr.read()
        try:
            msg = s["sock"].recv(4096).decode().split("\n")
        except socket.timeout:
            continue
        s["got"].append(msg)
        if field in msg:
            return msg
    raise AssertionError(f"no {field} within {timeout}s; got {s['got']}")


def prefixes(s) -> set[str]:
    with maps.Maps(s["pin"]) as m:
        return set(m.prefixes())


def test_notify_watchdog_reload_and_refused_reload(svc):
    ready = wait_for(svc, "READY=1")
    assert any(f.startswith("STATUS=steering 1 destination") for f in ready)
    assert prefixes(svc) == {"203.0.113.0/24"}
    # the watchdog: pinged by the loop at least every second (WATCHDOG_USEC 2 s)
    t0 = time.monotonic()
    wait_for(svc, "WATCHDOG=1")
    wait_for(svc, "WATCHDOG=1")
    assert time.monotonic() - t0 < 5

    # reload: a destination added
    svc["cfg"].write_text(BASE.format(more=BACKUP))
    svc["proc"].send_signal(signal.SIGHUP)
    wait_for(svc, "RELOADING=1")
    assert any(f.startswith("STATUS=steering 2") for f in wait_for(svc, "READY=1"))
    assert prefixes(svc) == {"203.0.113.0/24", "198.51.100.192/26", "2001:db8:5::/48"}

    # an invalid config is refused: same maps, same process, the error logged
    good = svc["cfg"].read_text()
    svc["cfg"].write_text(good.replace('paths = ["direct"]\n\n[policy]',
                                       'paths = ["nowhere"]\n\n[policy]'))
    svc["proc"].send_signal(signal.SIGHUP)
    refused = wait_for(svc, "READY=1")
    assert any("reload refused" in f for f in refused)
    assert prefixes(svc) == {"203.0.113.0/24", "198.51.100.192/26", "2001:db8:5::/48"}

    # reload: a destination removed
    svc["cfg"].write_text(BASE.format(more="").replace("origin", "origin2"))
    svc["proc"].send_signal(signal.SIGHUP)
    wait_for(svc, "RELOADING=1")
    wait_for(svc, "READY=1")
    assert prefixes(svc) == {"203.0.113.0/24"}
    end = time.monotonic() + 30           # the state file follows within a round
    while set(dmn.read_state(svc["state"])["destinations"]) != {"origin2"}:
        assert time.monotonic() < end, dmn.read_state(svc["state"])
        time.sleep(0.1)
    assert dmn.read_state(svc["state"])["pid"] == svc["proc"].pid

    svc["proc"].send_signal(signal.SIGTERM)
    wait_for(svc, "STOPPING=1")
    _, err = svc["proc"].communicate(timeout=60)
    assert svc["proc"].returncode == 0, err
    lines = [l for l in err.splitlines() if l]
    # every line: a journald priority, an ISO wall-clock time, a level
    for line in lines:
        assert re.match(r"<[0-7]>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [a-z]+ ", line), line
    errors = [l for l in lines if l.startswith("<3>")]
    assert errors and all("reload refused" in l for l in errors)
    assert "nowhere" in errors[0] and ":" in errors[0]        # file:line: message
    events = [json.loads(m)["event"] for _, _, m in map(parse_line, lines) if m[:1] == "{"]
    assert events.count("reload") == 2 and events[0] == "start"
