"""Fleet mode at fleet size on the host kernel: the 12-host fleet lab
(argoctl/lab/fleet.py: 9 edges with a client each sending UDP and opening TCP
connections to the origin, 3 relays, 1 s probes, one real daemon per host,
stand-in relay paths) sharing what it measures through a nats-server the lab
starts in its own namespace. One lab for the whole file; tests run in file order.

- every member (12) is listed by one host's `argoctl fleet status --json`,
  healthy, with its role, and every host reaches the origin;
- probe rates with real TCP: each edge checks its chosen path on demand (pace
  10: its handshakes vouch for it) and its other probed paths at pace 7; a
  relay, carrying no traffic of its own, checks its one path at pace 7;
- Orpheus across the fleet: the origin reachable only through r3; every edge's
  new connections complete through r3 (median edge within 2 s, the issue's
  target, every edge within 4 s) and its UDP flow follows (the times are
  printed: run with -s);
- the relays that lost the origin say so on the bus within one check;
- NATS killed: every daemon probes all of its paths itself again.

Timings go to stdout (-s); the assertions' bounds are wide on purpose: this is a
shared 2-core machine.
"""

from __future__ import annotations

import json
import resource
import statistics
import time

import pytest
from click.testing import CliRunner

from argoctl_fixtures import shared_prefix
from argoctl.cli import cli
from argoctl.lab.fleet import FleetLab

EDGES, RELAYS = 9, 3


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _origin_streams(d) -> set[str]:
    return {p.path for p in d.sched.streams() if p.dest == "origin"}


def _paces(d) -> dict[str, tuple[int, int]]:
    """Per probed path to the origin: (the agent's pace, the prober's)."""
    return {p.path: (d.fleet.pace_of("origin", p.path), p.pace) for p in d.sched.streams()
            if p.dest == "origin"}


def _status(lab, host: str, *args) -> dict:
    lab.daemons[host]._write_state()
    where = ["--run-dir", lab.run_dir(host), "--netns", lab.topo[host].netns]
    out = CliRunner().invoke(cli, ["fleet", "status", "--json", *args, *where])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def fleet(stale_namespaces_removed, tmp_path_factory):
    lab = FleetLab(shared_prefix(), str(tmp_path_factory.mktemp("fleetlab")), EDGES, RELAYS)
    t0 = time.monotonic()
    try:
        lab.start()
        ok = lab.wait_for(lambda: all(d.fleet.mode == "fleet" for d in lab.daemons.values()),
                          60)
        lab.timings["fleet_mode"] = round(time.monotonic() - t0, 2)
        print(f"\nfleet lab: {len(lab.daemons)} daemons, start-up (s) {lab.timings}")
        assert ok, {h: d.fleet.status_doc(0)["reason"] for h, d in lab.daemons.items()}
        yield lab
    finally:
        lab.stop()


def test_every_member_is_in_one_hosts_fleet_status(fleet):
    lab = fleet
    names = set(lab.daemons)
    assert len(names) == EDGES + RELAYS >= 12
    e1 = lab.daemons["e1"]
    assert lab.wait_for(lambda: set(e1.fleet.view.live_members(time.time())) == names, 30), \
        sorted(e1.fleet.view.members)
    c0, w0 = _cpu(), time.monotonic()
    time.sleep(5)
    cpu = (_cpu() - c0) / (time.monotonic() - w0)
    print(f"fleet lab steady: {cpu:.2f} of a core for {len(names)} daemons, their streams and "
          f"the origin (this process)")
    js = _status(lab, "e1")
    assert js["mode"] == "fleet"
    assert set(js["members"]) == names
    for h, m in js["members"].items():
        assert m["healthy"], (h, m)
        assert m["role"] == ("relay" if h.startswith("r") else "edge"), (h, m)
        assert m["version"]
    # who reaches the origin: every other host, by its own direct leg
    def reach():
        return {h: r["state"] for h, r in _status(lab, "e1", "--dest", "origin")["reach"].items()}
    assert lab.wait_for(lambda: reach() == {h: "up" for h in names - {"e1"}}, 20), reach()
    for d in lab.daemons.values():
        assert sum(d.fleet.view.rejected.values()) == 0, d.fleet.view.rejected
    # each edge probes 2 of its 4 paths end to end (direct and k = 1 relay)
    for e in lab.edge_names:
        assert lab.wait_for(lambda: len(_origin_streams(lab.daemons[e])) == 2, 10), \
            (e, _origin_streams(lab.daemons[e]))


def test_real_tcp_puts_the_choice_on_demand_and_the_rest_on_slow_checks(fleet):
    from argoctl.fleet.rates import DEMAND_PACE
    lab = fleet
    assert lab.connectors and all(c.attempts for c in lab.connectors.values())
    check = lab.daemons["e1"].fleet.check_pace
    assert check == 7                    # 1 s probes, 15 s TTL

    def want(e):
        d = lab.daemons[e]
        choice = d.choices()["origin"]
        return {p: ((DEMAND_PACE, DEMAND_PACE) if p == choice else (check, check))
                for p in _origin_streams(d)}
    for e in lab.edge_names:
        d = lab.daemons[e]
        assert lab.wait_for(lambda: _paces(d) == want(e), 30), (e, d.choices(), _paces(d))
    # a relay carries no traffic of its own (no packet to the origin through its
    # datapath): its one path, the leg it publishes, is checked, not probed at 1 s
    for r in lab.relay_names:
        d = lab.daemons[r]
        assert lab.wait_for(lambda: _paces(d) == {"direct": (check, check)}, 30), \
            (r, _paces(d))
    # the connections made it (handshakes answered: the evidence is real)
    since = time.monotonic()
    time.sleep(2)
    assert set(lab.connected(since)) == set(lab.edge_names), lab.connected(since)
    paced = {e: _paces(lab.daemons[e]) for e in lab.edge_names}
    print(f"paces with real TCP (agent, prober) per edge: {paced}")


def test_orpheus_every_edge_reaches_the_origin_through_the_one_relay_that_can(fleet):
    lab = fleet
    last = lab.relay_names[-1]
    unprobed = [e for e in lab.edge_names if last not in _origin_streams(lab.daemons[e])]
    o = lab.orpheus(60, keep=True)
    try:
        tcp, reach = o["tcp"], o["udp"]

        def line(what, times):
            v = sorted(x for x in times.values() if x is not None)
            return (f"{what}: " + ", ".join(f"{e} {times[e]}" if times[e] is None else
                                            f"{e} {times[e]:.2f}" for e in sorted(times))
                    + (f"; median {statistics.median(v):.2f}, last {v[-1]:.2f} s" if v else ""))
        print(f"orpheus: impairments applied in {o['applied_s']:.2f} s; {len(unprobed)} edges "
              f"had not probed {last} before; choices before: {o['before']}; after the "
              f"blackholes (s):\n  " + line(f"chose {last}", o["chose"]) + "\n  "
              + line(f"first new TCP connection through {last}", tcp) + "\n  "
              + line(f"UDP flow through {last}", reach) + "\n  moves: "
              + "; ".join(f"{e} " + " ".join(f"{c}@{at:.2f}" for c, at in m)
                          for e, m in sorted(o["moves"].items())))
        assert o["ok"], (reach, tcp, lab.choices())
        # the target is 2 s with 1 s probes for the median edge's new
        # connections (measured 1.58-1.76 s); the bounds leave a loaded 2-core machine
        # a margin, for the median and for the last edge
        assert statistics.median(tcp.values()) <= 2.5, tcp
        assert max(tcp.values()) <= 4.0, tcp
        # every edge chose it, and its traffic keeps arriving there (not only a first datagram)
        assert lab.wait_for(lambda: set(lab.choices().values()) == {last}, 10), lab.choices()
        sources = {lab.client_address(e): e for e in lab.edge_names}
        since = time.monotonic()
        time.sleep(2)
        arriving = {sources[s] for s in lab.sink.first_from({f"to-{last}"}, since)
                    if s in sources}
        assert arriving == set(lab.edge_names), arriving
        # the relays that lost the origin said so on the bus: a relay carries no
        # traffic of its own, so its leg is checked every check_pace intervals
        # (rates.py, idle) and its loss is published within one check, a
        # timeout and a publish interval (7.7 + 0.8 + 1 s here; bound 15 s)
        e1 = lab.daemons["e1"]
        rest = lab.relay_names[:-1]
        assert lab.wait_for(lambda: all(
            (leg := e1.fleet.view.leg(r, "origin", time.time())) is None or leg.state != "up"
            for r in rest), 15), {r: e1.fleet.view.leg(r, "origin", time.time()) for r in rest}
    finally:
        o["lift"]()
    # (no return to direct asserted: without netem every path here is sub-millisecond,
    # and a working path is kept unless another is clearly better)


def test_nats_killed_every_daemon_probes_every_path_itself(fleet):
    from argoctl.fleet.agent import LOCAL_AFTER_S
    lab = fleet
    t0 = time.monotonic()
    lab.nats.kill(0)
    assert lab.wait_for(lambda: all(d.fleet.mode == "local" for d in lab.daemons.values()),
                        LOCAL_AFTER_S + 10), \
        {h: d.fleet.mode for h, d in lab.daemons.items()}
    took = time.monotonic() - t0
    print(f"nats killed: all {len(lab.daemons)} daemons local after {took:.2f} s "
          f"(bound {LOCAL_AFTER_S:g} s)")
    for e in lab.edge_names:
        d = lab.daemons[e]
        assert lab.wait_for(lambda: _origin_streams(d) == {"direct", *lab.relay_names}, 10), \
            (e, _origin_streams(d))
    js = _status(lab, "e1")
    assert js["mode"] == "local" and "probed locally" in js["reason"], js["reason"]
    # every client's traffic still gets to the origin
    since = time.monotonic()
    time.sleep(2)
    links = {f"to-{h}" for h in lab.daemons}
    assert {lab.client_address(e) for e in lab.edge_names} <= \
        set(lab.sink.first_from(links, since)), lab.sink.by_link(since)
