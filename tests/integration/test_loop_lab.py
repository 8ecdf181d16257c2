"""`argoctl run` in the standard lab with GRE tunnels and netem (issue 4's scenarios a-e).

One lab and one daemon (in-process, a thread in edge's namespace) for the
module; each scenario starts from steady state on direct and undoes its
impairments. The relays' links to edge carry 10 ms each way (netem), so direct
is clearly the fastest path and traffic has a reason to come back to it.
Behaviour is read from packets (origin's sink notes the interface each
datagram of the client's stream arrived on; the TCP server notes each
connection's peer: relays masquerade) and from the daemon's decisions.
"""

from __future__ import annotations

import time

import pytest

from argoctl import apply
from argoctl.lab import loop as looplab
import kit
from argoctl.estimator import State
from argoctl.lab.topo import udp_delivers

POLICY = {"probe_interval_ms": 100, "detect_multiplier": 3, "probe_timeout_ms": 300,
          "hold_down_s": 2.0, "recover_probes": 3, "metrics_listen": ""}
RELAY_DELAY_MS = {"relay1": 10, "relay2": 30}   # each way: relay1 is the better relay
RELAYS = ("relay1", "relay2")
LINKS = {"to-relay1", "to-relay2"}


@pytest.fixture(scope="module")
def loop(lab_module, tmp_path_factory):
    t = lab_module
    for r in RELAYS:
        t.link("edge", r).impair(delay_ms=RELAY_DELAY_MS[r], direction="both")
    # origin's responder is its own process, as on a real origin: in this process
    # it would wait for the daemon's, the stream's and the sink's threads (under
    # TCG, late replies put healthy relays in doubt, or down, and move pinned flows)
    lab = looplab.LoopLab(t, str(tmp_path_factory.mktemp("loop")), POLICY, tunnels="gre",
                          responder_process=True)
    with kit.running_with_tcp(lab):
        yield lab


def _settle(loop, direct_chosen: bool):
    d = loop.daemon
    ok = loop.wait_for(lambda: (loop.choice() == "direct" or not direct_chosen)
                       and _states(d) == {"up"}, 60, 0.1)
    assert ok, (loop.choice(), _states(d, all_=True), d.engine.last("origin").reason,
                [(round(r.at, 2), r.reason, r.tiers) for r in list(d.history)[-4:]])


def _undo(loop):
    loop.topo.link("edge", "origin").clear()
    for r in RELAYS:
        loop.topo.link("edge", r).impair(delay_ms=RELAY_DELAY_MS[r], direction="both")


@pytest.fixture
def steady(loop):
    """Every path up and direct chosen; impairments this test adds on edge-origin undone."""
    _settle(loop, direct_chosen=True)
    yield loop
    _undo(loop)


@pytest.fixture
def all_up(loop):
    """Every path up, whichever is chosen (direct may be flap-suppressed after a-c:
    three failures in two minutes); impairments undone as for `steady`."""
    _settle(loop, direct_chosen=False)
    yield loop
    _undo(loop)


def _states(d, all_=False):
    dec = d.engine.last("origin")
    if dec is None:
        return {} if all_ else set()
    states = {p: s.state.value for p, s in dec.scores.items()}
    return states if all_ else set(states.values())


def _since(loop, t0):
    return [r for r in loop.daemon.history if r.at >= t0]


def _stream_on(loop, stream, since, seconds=1.0):
    """Datagrams of a fresh window (after `since`) by arrival link, and "sent": how
    many the stream sent in it (under TCG the stream runs well below its rate)."""
    t1 = max(time.monotonic(), since)
    time.sleep(max(0.0, t1 - time.monotonic()) + seconds)
    got = loop.sink.by_link(since=t1)
    got["sent"] = sum(1 for x in list(stream.sent) if t1 <= x < t1 + seconds)
    return got


def _on_relays(got: dict) -> bool:
    """Most of the window's datagrams came through a relay, none direct. (Under TCG a
    late probe can put a relay in doubt and hand new flows to the other one: the
    scenarios are about direct vs relays.)"""
    relayed = sum(n for link, n in got.items() if link in LINKS)
    return got["sent"] >= 10 and relayed >= 0.8 * got["sent"] and not got.get("to-edge")


def _marked_down(loop, path: str, since: float) -> list:
    """Decisions since `since` that marked `path` down in the datapath: its
    pinned flows move (rule 3), so a flow pinned there may be on direct now."""
    return [(round(r.at - since, 2), r.reason[:80], r.tiers) for r in _since(loop, since)
            if r.weights.get(path, (0, True))[1] is False]


def _relay_of_peer(loop, peer: str):
    t = loop.topo
    for r in RELAYS:
        if peer == t.link(r, "origin").address(t[r]):
            return r
    return "direct" if peer.startswith("198.51.100.") else peer


def _connect_via(loop) -> str:
    """Open a new TCP connection from the client; the path origin saw it arrive by."""
    n = len(loop.tcp.peers)
    # generous: SYN retransmissions under a contended TCG host take seconds
    assert looplab.tcp_connect(loop.topo["client"], timeout=15), "connection failed"
    assert loop.wait_for(lambda: len(loop.tcp.peers) > n, 10)
    return _relay_of_peer(loop, loop.tcp.peers[n])


def test_a_blackholed_direct_moves_the_stream_and_new_connections(steady):
    loop, t, d = steady, steady.topo, steady.daemon
    stream = looplab.Stream(t["client"], pps=100)
    try:
        assert loop.wait_for(lambda: loop.sink.by_link().get("to-edge", 0) > 20, 20)
        assert _connect_via(loop) == "direct"
        t0 = time.monotonic()
        t.link("edge", "origin").impair(blackhole=True, direction="a->b")
        assert loop.wait_for(lambda: loop.choice() in RELAYS, 10), d.engine.last("origin").reason
        assert loop.wait_for(lambda: d.written["origin"]["direct"] == (0, False), 10)
        got = _stream_on(loop, stream, time.monotonic() + 0.3)
        assert _on_relays(got), got
        pinned_at = time.monotonic()
        carrier = max(RELAYS, key=lambda r: got.get(f"to-{r}", 0))
        assert _connect_via(loop) in RELAYS, "a new connection should go through a relay"
        recs = _since(loop, t0)
        leave = next(i for i, r in enumerate(recs) if r.choice in RELAYS)
        assert recs[leave].previous == "direct", recs[leave]
        assert not [r for r in recs[leave:] if r.choice == "direct"]
        # recovery: direct comes back only once hold-down has passed, then wins again
        t1 = time.monotonic()      # before: in the VM tc takes seconds, the link
        t.link("edge", "origin").clear()     # is clear before it returns
        assert loop.wait_for(lambda: d.engine.path("origin", "direct").state is State.UP, 10)
        up_at = d.engine.path("origin", "direct").snapshot().recovered_at
        assert loop.wait_for(lambda: loop.choice() == "direct", 30), d.engine.last("origin").reason
        back = next(r for r in _since(loop, t1) if r.choice == "direct")
        # held down: no return while another path is usable (under TCG the relays may be
        # held too, after a flap of their own: then held direct may win on score)
        if back.at < up_at + POLICY["hold_down_s"]:
            assert "usable" not in back.tiers.values(), (back.at - up_at, back.tiers, back.reason)
        # a weight change moves new flows only: the running stream stays pinned on its
        # relay while it stays up, a new connection takes direct. (Under TCG a
        # stalled guest can take the relay down meanwhile: then, and only then, the
        # stream moves, as rule 3 says.)
        got = _stream_on(loop, stream, time.monotonic() + 0.3)
        moved = _marked_down(loop, carrier, pinned_at)
        assert _on_relays(got) or moved and got.get("to-edge", 0) >= 0.8 * got["sent"], \
            (got, carrier, moved)
        assert _connect_via(loop) == "direct"
    finally:
        stream.stop()


def test_b_added_latency_moves_traffic_and_its_removal_brings_it_back(steady):
    loop, t, d = steady, steady.topo, steady.daemon
    stream = looplab.Stream(t["client"], pps=100)
    try:
        t0 = time.monotonic()
        t.link("edge", "origin").impair(delay_ms=100, direction="a->b")
        assert loop.wait_for(lambda: loop.choice() in RELAYS, 40), d.engine.last("origin").reason
        switch = next(r for r in _since(loop, t0) if r.choice in RELAYS)
        # "switch direct -> relayN: better by ..." normally; on a starved TCG guest
        # 100 ms more can make replies overdue: direct in doubt, or down
        assert switch.reason.startswith(("switch direct -> ", "failover direct -> ",
                                         "make-before-break: direct suspect")), switch.reason
        # a slower path is not a dead one: direct stays up, so the stream (a pinned
        # flow) may stay; new connections take the faster relay
        assert _connect_via(loop) in RELAYS
        t1 = time.monotonic()      # before: in the VM tc takes seconds, the link
        t.link("edge", "origin").clear()     # is clear before it returns
        assert loop.wait_for(lambda: loop.choice() == "direct", 60), d.engine.last("origin").reason
        back = next(r for r in _since(loop, t1) if r.choice == "direct")
        assert back.reason.startswith("switch relay"), back.reason
        assert " -> direct: better by " in back.reason, back.reason
        # traffic left direct for being slower (or, on a starved guest, for being
        # down): either way it returns only after a hold-down
        assert back.at - t1 >= POLICY["hold_down_s"], (back.at - t1, back.reason)
        if switch.reason.startswith("switch direct -> "):
            assert "(hold-down: left for latency)" in back.reason, back.reason
        assert _connect_via(loop) == "direct"
    finally:
        stream.stop()


def test_c_a_broken_return_direction_is_down(steady):
    loop, t, d = steady, steady.topo, steady.daemon
    t0 = time.monotonic()
    t.link("edge", "origin").impair(blackhole=True, direction="b->a")   # origin -> edge only
    assert loop.wait_for(lambda: d.engine.path("origin", "direct").state is State.DOWN, 10)
    down_at = d.engine.path("origin", "direct").snapshot().since
    assert udp_delivers(t["edge"], t["origin"], looplab.ORIGIN), "forward direction still works"
    assert loop.wait_for(lambda: loop.choice() in RELAYS, 5)
    assert d.written["origin"]["direct"] == (0, False)
    assert not [r for r in _since(loop, down_at) if r.choice == "direct"]
    stream = looplab.Stream(t["client"], pps=100)
    try:
        got = _stream_on(loop, stream, time.monotonic() + 0.3)
        assert _on_relays(got), got
    finally:
        stream.stop()


def test_d_a_stopped_relay_moves_traffic_to_the_other(all_up):
    loop, t, d = all_up, all_up.topo, all_up.daemon
    t.link("edge", "origin").impair(blackhole=True, direction="both")
    assert loop.wait_for(lambda: loop.choice() in RELAYS and
                         d.written["origin"]["direct"] == (0, False), 10)
    stream = looplab.Stream(t["client"], pps=100)
    try:
        got = _stream_on(loop, stream, time.monotonic() + 0.3)
        assert _on_relays(got), got
        # the relay carrying the stream right now
        first = loop.sink.got[-1][2][len("to-"):]
        other = next(r for r in RELAYS if r != first)
        t0 = time.monotonic()
        # the relay stops: its tunnel goes away
        t[first].run(["ip", "link", "set", "ag-edge", "down"], check=True)
        try:
            assert loop.wait_for(lambda: loop.choice() == other, 10), \
                d.engine.last("origin").reason
            assert loop.wait_for(lambda: d.written["origin"][first] == (0, False), 10)
            first_down = d.engine.path("origin", first).snapshot().since
            got = _stream_on(loop, stream, time.monotonic() + 0.3)
            assert got.get(f"to-{other}", 0) >= 0.8 * got["sent"] > 5, got
            assert not got.get(f"to-{first}") and not got.get("to-edge"), got
            assert not [r for r in _since(loop, first_down) if r.choice != other]
        finally:
            t[first].run(["ip", "link", "set", "ag-edge", "up"], check=True)
            # the kernel flushed the relay's routes through ag-edge when it went
            # down; the relay's argoctl puts them back (as its watch would): its
            # table ends in a drop, so replies no longer leak out through main
            apply.up(loop.configs[first], ns=t[first].netns, run_dir=loop.run_dir,
                     stages=("links", "nft"))
    finally:
        stream.stop()
    # everything recovers (for the next test)
    t.link("edge", "origin").clear()
    assert loop.wait_for(lambda: _states(d) == {"up"}, 30)


def test_e_forged_and_replayed_replies_change_no_decision(loop):
    """client (no key) spoofs origin at the direct prober's socket while direct is
    down: replies captured on the wire earlier, made with another key, tampered.
    (Direct need not be chosen: after a, c and d flap damping may suppress it.)"""
    t, d = loop.topo, loop.daemon
    assert loop.wait_for(lambda: d.engine.path("origin", "direct").state is State.UP, 30)
    port = kit.probe_port(d, "direct")
    captured = kit.capture_replies(t["edge"], "to-origin", port, 1.5)
    assert len(captured) >= 5
    t.link("edge", "origin").impair(blackhole=True, direction="a->b")
    assert loop.wait_for(lambda: d.engine.path("origin", "direct").state is State.DOWN
                         and loop.choice() in RELAYS, 10)
    n_hist = len(d.history)
    before = dict(d.sched.rejects()["direct"])
    n = kit.spoof(t["client"], captured * 3 + kit.forged_replies(captured, 30), looplab.ORIGIN,
                  looplab.RESPONDER_PORT, kit.probe_addr(d, "direct")[0], port, pps=200)
    time.sleep(1.0)
    after = d.sched.rejects()["direct"]
    got = {k: after.get(k, 0) - before.get(k, 0)
           for k in ("replayed", "late", "forged", "malformed")}
    # a captured reply that had arrived after its probe's timeout replays as "late"
    assert got["replayed"] + got["late"] == 3 * len(captured), got
    assert sum(got.values()) == n, got
    assert d.engine.path("origin", "direct").state is State.DOWN
    # (relays may hand over to each other under TCG; direct must stay down and unused)
    new = list(d.history)[n_hist:]
    assert all(r.weights["direct"] == (0, False) for r in new), [r.reason for r in new]
    assert loop.choice() in RELAYS
    t.link("edge", "origin").clear()
