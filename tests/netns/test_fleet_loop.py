"""Fleet mode end to end on the host kernel: three real daemons (edge, relay1,
relay2) in the standard lab with stand-in relay paths (argoctl/lab/loop.py,
tunnels="none"), sharing what they measure through a nats-server that runs in
relay2's namespace (argoctl/lab/nats.py). Tests run in file order on one lab.

- membership and legs: every daemon's record and direct leg reach the others;
- the probe plan: edge probes the origin through 2 of its 3 paths (k = 1);
- Orpheus across the fleet: the origin reachable only through relay2, edge's
  client traffic gets there;
- NATS killed: edge probes every path itself again, says so in its log events,
  state file and metrics.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from argoctl import config
from argoctl import daemon as dmn
from argoctl.lab import loop as looplab
from argoctl.lab.nats import NatsFleet

POLICY = {"probe_interval_ms": 100, "detect_multiplier": 3, "probe_timeout_ms": 300,
          "hold_down_s": 2.0, "recover_probes": 3}
FLEET = '''
[fleet]
servers = ["{url}"]
credentials_file = "{creds}"
publish_interval_ms = 200
ttl_s = 3
alternatives = 1
'''
RELAY_DEST = '''
[[destination]]
name = "origin"
prefixes = ["203.0.113.0/24"]
paths = ["direct"]
probe = {{ kind = "udp", target = "203.0.113.10", port = 7447 }}

[policy]
probe_interval_ms = 100
detect_multiplier = 3
probe_timeout_ms = 300
responder_key_file = "{key}"
'''


def _metric(lab, name: str) -> float:
    import urllib.request
    port = lab.daemon.exporter.server.server_port
    with lab.topo["edge"].inside():      # the exporter listens in edge's namespace
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def _origin_streams(d) -> set[str]:
    return {p.path for p in d.sched.streams() if p.dest == "origin"}


@pytest.fixture(scope="module")
def fleet(lab_module, tmp_path_factory):
    t = lab_module
    directory = str(tmp_path_factory.mktemp("fleet"))
    nf = NatsFleet(["edge", "relay1", "relay2"], ttl_s=3, netns=t["relay2"].netns,
                   address="192.0.2.3")
    lab = looplab.LoopLab(t, directory, POLICY, tunnels="none")
    relays = {}
    try:
        nf.start()
        lab.start(daemon=False)
        key = lab.configs["edge"].policy.responder_key_file
        # the relays answer on their tunnel addresses (edge's tunnel legs)
        for r in ("relay1", "relay2"):
            t[r].run(["ip", "addr", "add", f"{lab.configs['edge'].peer(r).tunnel_address}/32",
                      "dev", "lo"], check=True)
        edge_path = lab.configs["edge"].path
        with open(edge_path, "a") as f:
            f.write(FLEET.format(url=nf.urls[0], creds=nf.credentials("edge")))
        lab.configs["edge"] = config.load(edge_path)
        for r in ("relay1", "relay2"):
            path = os.path.join(directory, f"{r}-fleet.toml")
            text = open(lab.configs[r].path).read().split("[[peer]]")[0]
            with open(path, "w") as f:
                f.write(text + RELAY_DEST.format(key=key)
                        + FLEET.format(url=nf.urls[0], creds=nf.credentials(r)))
            cfg = config.load(path)
            opts = dmn.Options(ns=t[r].netns, run_dir=os.path.join(directory, f"run-{r}"),
                               cgroup=None, apply_config=False, metrics_listen="")
            relays[r] = dmn.Daemon(cfg, opts).start_thread()
        lab.start_daemon(metrics_listen="127.0.0.1:0")
        yield lab, relays, nf
    finally:
        from argoctl import datapath, home
        for r, d in relays.items():
            try:
                d.stop()
            finally:
                datapath.detach(home.pin_dir(d.opts.ns), netns=d.opts.ns, cgroup=None)
        lab.stop()
        nf.stop()


def test_members_and_legs_reach_every_agent(fleet):
    lab, relays, nf = fleet
    edge = lab.daemon
    assert lab.wait_for(lambda: edge.fleet.mode == "fleet", 20), edge.fleet.status_doc(0)
    now = time.time

    def legs_seen():
        v = edge.fleet.view
        return all(v.leg(r, "origin", now()) is not None and v.leg(r, "origin", now()).up
                   for r in ("relay1", "relay2"))
    assert lab.wait_for(legs_seen, 20), edge.fleet.view.direct
    assert lab.wait_for(lambda: set(edge.fleet.view.live_members(now()))
                        == {"relay1", "relay2", "edge"}, 10)
    # the relays hear edge's own leg too; nobody's data was rejected
    assert lab.wait_for(lambda: relays["relay2"].fleet.view.leg("edge", "origin", now())
                        is not None, 10)
    for d in (edge, *relays.values()):
        assert sum(d.fleet.view.rejected.values()) == 0, d.fleet.view.rejected
    edge._write_state()
    doc = dmn.read_state(edge.state_file)
    assert doc["fleet"]["mode"] == "fleet"
    m = doc["fleet"]["members"]["relay2"]
    assert m["role"] == "relay" and m["version"] and m["healthy"]
    assert set(doc["fleet"]["reach"]["origin"]) == {"relay1", "relay2"}
    assert _metric(lab, "argoctl_fleet_active") == 1
    assert _metric(lab, "argoctl_fleet_members") == 3
    # `argoctl fleet status` renders the same (table and JSON)
    from click.testing import CliRunner
    from argoctl.cli import cli
    where = ["--run-dir", lab.run_dir, "--netns", lab.topo["edge"].netns]
    out = CliRunner().invoke(cli, ["fleet", "status", "--json", *where])
    assert out.exit_code == 0, out.output
    js = json.loads(out.stdout)
    assert js["mode"] == "fleet" and set(js["members"]) == {"edge", "relay1", "relay2"}
    out = CliRunner().invoke(cli, ["fleet", "status", "--dest", "origin", *where])
    assert out.exit_code == 0, out.output
    assert "who reaches origin" in out.stdout and "relay2" in out.stdout
    out = CliRunner().invoke(cli, ["fleet", "status", "--dest", "origin", "--json", *where])
    paths = json.loads(out.stdout)["paths"]
    assert paths["direct"]["how"] == "end-to-end"
    assert {p["how"] for p in paths.values()} <= {"end-to-end", "composed"}
    out = CliRunner().invoke(cli, ["fleet", "status", "--dest", "nowhere", *where])
    assert out.exit_code == 2 and "known: origin" in out.stderr


def test_edge_probes_the_choice_and_one_alternative_end_to_end(fleet):
    lab, relays, nf = fleet
    edge = lab.daemon
    assert lab.wait_for(lambda: len(_origin_streams(edge)) == 2, 10), _origin_streams(edge)
    streams = _origin_streams(edge)
    assert "direct" in streams
    (unprobed,) = {"relay1", "relay2"} - streams

    def composed():
        # scored from the bus: relay's leg + the tunnel leg + learned overhead
        s = edge.engine.last("origin").scores[unprobed]
        return s.tier_name == "unknown" and s.smoothed_ms is not None and s.smoothed_ms > 0
    assert lab.wait_for(composed, 10), edge.engine.last("origin").explain()
    # tunnel legs measured and published
    assert lab.wait_for(lambda: set(edge.fleet.view.my_tunnel) == {"relay1", "relay2"}, 10)


def test_orpheus_origin_reachable_only_through_relay2(fleet):
    lab, relays, nf = fleet
    t, edge = lab.topo, lab.daemon
    stream = looplab.Stream(t["client"], pps=100)
    try:
        t0 = time.monotonic()
        t.link("edge", "origin").impair(blackhole=True, direction="a->b")
        t.link("relay1", "origin").impair(blackhole=True, direction="a->b")
        assert lab.wait_for(lambda: lab.choice() == "relay2", 15), \
            [r.reason for r in edge.history][-5:]
        moved = time.monotonic() - t0
        arrived = lab.sink.first_on({"to-relay2"}, t0)
        assert lab.wait_for(lambda: lab.sink.first_on({"to-relay2"}, t0) is not None, 5)
        assert arrived is None or arrived - t0 < 15
        # relay1 told the fleet it cannot reach the origin
        assert lab.wait_for(lambda: (lambda l: l is not None and l.state != "up")(
            edge.fleet.view.leg("relay1", "origin", time.time())), 10)
        assert moved < 10, moved
    finally:
        stream.stop()
        t.link("edge", "origin").clear()
        t.link("relay1", "origin").clear()


def test_nats_killed_edge_probes_every_path_itself(fleet, caplog):
    import logging
    caplog.set_level(logging.INFO, logger="argoctl.daemon")
    lab, relays, nf = fleet
    edge = lab.daemon
    assert lab.wait_for(lambda: edge.fleet.mode == "fleet", 20)
    t0 = time.monotonic()
    nf.kill(0)
    assert lab.wait_for(lambda: edge.fleet.mode == "local", 15), edge.fleet.status_doc(0)
    took = time.monotonic() - t0
    from argoctl.fleet.agent import LOCAL_AFTER_S
    assert took < LOCAL_AFTER_S + 2, took
    assert lab.wait_for(lambda: _origin_streams(edge) == {"direct", "relay1", "relay2"}, 5)
    edge._write_state()
    doc = dmn.read_state(edge.state_file)
    assert doc["fleet"]["mode"] == "local" and "probed locally" in doc["fleet"]["reason"]
    assert _metric(lab, "argoctl_fleet_active") == 0
    assert _metric(lab, "argoctl_fleet_bus_connected") == 0
    assert _metric(lab, "argoctl_fleet_mode_changes_total") >= 2
    events = [json.loads(r.getMessage()) for r in caplog.records
              if r.name == "argoctl.daemon" and '"fleet_mode"' in r.getMessage()]
    assert events and events[-1]["mode"] == "local", events
    # nothing composed is used any more: every path is measured end to end
    assert lab.wait_for(lambda: all(
        s.snapshot.counts.get("replies", 0) > 0 or s.state.value != "unknown"
        for s in edge.engine.last("origin").scores.values()), 10)
    # the server is back: fleet mode again
    nf.start_server(0)
    assert lab.wait_for(lambda: edge.fleet.mode == "fleet", 30), edge.fleet.status_doc(0)
    assert json.dumps(doc)      # (the state file stayed valid JSON throughout)
