"""The daemon's truth at run time (issue 15), with GRE tunnels in the standard lab.

1. It watches what it owns: a tunnel device, its route or its rule deleted behind
   the daemon's back while a 1,000 pps stream uses that path. The path goes down
   and the stream moves to the other relay; no packet of the client leaves through
   the main table (an nft counter on edge's direct link, before netem, counts the
   client's datagrams there: it must stay 0); the object is recreated and the
   path is chosen again after recovery.
2. Probes see what data sees: a relay whose reverse-path filter drops the
   client LAN's packets (probes leave from edge's LAN address, so they meet the
   same filter; from the tunnel address they would pass) is left by a UDP
   stream, by ICMP and by new TCP connections within BOUND_S, and not returned
   to while the drop stays.

One lab, one daemon (in-process, in edge's namespace) for the module. edge ->
origin is blackholed throughout, so the relays are the only working paths and
any datagram of the client on edge's direct link is a leak, not a choice.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import threading
import time

import pytest

import kit
from argoctl.estimator import State
from argoctl.lab import loop as looplab

# detect_multiplier 5, not 3: with two TCG guests on the machine's two cores, a
# prober stalled ~0.6 s marked both relays down every ~20 s at 3 (run 6: 6 and
# 4 downs in 90 s without a fault), so flap damping, not the case, decided.
POLICY = {"probe_interval_ms": 100, "detect_multiplier": 5, "probe_timeout_ms": 300,
          "hold_down_s": 2.0, "recover_probes": 3, "metrics_listen": ""}
DETECT_S = 0.5                 # detect_multiplier x probe interval
BOUND_S = 3.0                  # asserted: DETECT_S plus a wide margin for the TCG guest
RELAYS = ("relay1", "relay2")
CLIENT = "198.51.100.2"
NFT_TABLE = "truthful_leak"


@pytest.fixture(scope="module")
def tlab(lab_module, tmp_path_factory):
    t = lab_module
    t.link("edge", "origin").impair(blackhole=True, direction="a->b")
    lab = looplab.LoopLab(t, str(tmp_path_factory.mktemp("truthful")), POLICY, tunnels="gre")
    # The client's datagrams leaving edge by its direct link: postrouting sees
    # them before netem drops them.
    t["edge"].run(["nft", "add table ip " + NFT_TABLE], check=True)
    t["edge"].run(["nft", f"add chain ip {NFT_TABLE} post {{ type filter hook postrouting "
                          "priority 0 ; }"], check=True)
    t["edge"].run(["nft", f"add rule ip {NFT_TABLE} post oifname to-origin ip saddr {CLIENT} "
                          "counter"], check=True)
    with kit.running_with_tcp(lab):
        yield lab


def leaked(lab) -> int:
    out = lab.topo["edge"].run(["nft", "list", "table", "ip", NFT_TABLE], check=True).stdout
    for line in out.splitlines():
        if "counter packets" in line:
            return int(line.split("counter packets")[1].split()[0])
    raise AssertionError(out)


def prefer(lab, relay: str) -> None:
    """relay1 is the faster relay; to prefer relay2, slow relay1's link down."""
    t = lab.topo
    t.link("edge", "relay1").impair(delay_ms=10 if relay == "relay1" else 60, direction="both")
    t.link("edge", "relay2").impair(delay_ms=30, direction="both")


def _state(d, path):
    return d.engine.path("origin", path).state


def _standing(d) -> dict[str, str]:
    """Each relay's standing in the latest decision, for a failure's message."""
    last = d.engine.last("origin")
    return {r: (f"{s.state.value} {s.tier_name} penalty {s.penalty:.0f}"
                f"{' suppressed' if s.suppressed else ''} downs {s.snapshot.counts['downs']}"
                f" passive_fail {s.snapshot.counts['passive_fail']}")
            for r, s in last.scores.items() if r in RELAYS}


def _reuse_wait(d, relay: str) -> float:
    """How long until `relay`'s flap suppression ends, from the penalty the engine
    reports now (0 if it is not suppressed)."""
    t, s = d.engine.tuning, d.engine.last("origin").scores[relay]
    return t.flap_half_life_s * math.log2(s.penalty / t.flap_reuse) if s.suppressed else 0.0


def _usable(d, relays) -> bool:
    """Each relay is up and usable in the latest decision: no hold-down, not
    suppressed."""
    last, now = d.engine.last("origin"), time.monotonic()
    return all(last.scores[r].state is State.UP and not last.scores[r].suppressed and
               (last.scores[r].held_until is None or last.scores[r].held_until <= now)
               for r in relays)


def _settle_on(lab, relay: str, failures: dict[str, int]) -> None:
    """Traffic on `relay`, every relay up and usable, free of what earlier cases
    left: if a relay's flap penalty leaves no room for the `failures` the case
    will cause it, the edge's daemon reloads its config first (what SIGHUP does:
    a new engine, no flap memory) rather than wait out minutes of damping (under
    TCG a starved prober flapped both relays: run 5, 8 and 9 downs by the third
    case)."""
    d = lab.daemon
    t, last, now = d.engine.tuning, d.engine.last("origin"), time.monotonic()
    if any(last.scores[r].suppressed or last.scores[r].penalty * 0.5 ** (
            (now - last.at) / t.flap_half_life_s) + n * t.flap_penalty > t.flap_suppress
           for r, n in failures.items()):
        print(f"\nreloading the edge's daemon before the case: {_standing(d)}")
        lab.reload_edge()
        d = lab.daemon
    prefer(lab, relay)
    t0 = time.monotonic()
    ok = lab.wait_for(lambda: lab.choice() == relay and all(
        _state(d, r) is State.UP for r in RELAYS) and _usable(d, failures), 90, 0.1)
    print(f"\nsettled on {relay} after {time.monotonic() - t0:.1f} s: {_standing(d)}")
    assert ok, (lab.choice(), _standing(d), d.engine.last("origin").reason)


def _window(lab, stream, seconds=1.0, grace=1.0):
    """Of the datagrams sent in the next `seconds`: how many arrived by which
    link (given `grace` more to arrive: under TCG one can be ~0.5 s in flight),
    and how many were sent ("sent")."""
    t1 = time.monotonic()
    time.sleep(seconds)
    sent = [i for i, x in enumerate(list(stream.sent)) if t1 <= x < t1 + seconds]
    time.sleep(grace)
    seqs = set(sent)
    got: dict[str, int] = {}
    for at, seq, ifname in list(lab.sink.got):
        if at >= t1 and seq in seqs:      # (an earlier test's stream reused the seqs)
            got[ifname] = got.get(ifname, 0) + 1
    got["sent"] = len(sent)
    return got


def _since(d, t0: float) -> list[str]:
    """The decisions since t0, for a failure's message."""
    return [f"{r.at - t0:+.2f} s {r.previous} -> {r.choice}: {r.reason} {r.tiers}"
            for r in d.history if r.at >= t0]


def _relay_of_peer(lab, peer: str) -> str:
    t = lab.topo
    for r in RELAYS:
        if peer == t.link(r, "origin").address(t[r]):
            return r
    return peer


def _connect_via(lab) -> str:
    n = len(lab.tcp.peers)
    assert looplab.tcp_connect(lab.topo["client"], timeout=15), "connection failed"
    assert lab.wait_for(lambda: len(lab.tcp.peers) > n, 10)
    return _relay_of_peer(lab, lab.tcp.peers[n])


def _delete(lab, what: str, relay: str) -> float:
    """Delete `what` of relay's path; returns when the deleting request was sent:
    IPRoute(netns=) forks a helper first, which under TCG is not instant (run 9's
    link case: down 2.6 s after the call, with the fork counted)."""
    cfg = lab.configs["edge"]
    pid, r = cfg.path_id(relay), cfg.routing
    with lab.topo["edge"].ipr() as ipr:
        dev = ipr.link_lookup(ifname=f"ag-{relay}")[0]
        t0 = time.monotonic()
        if what == "link":
            ipr.link("del", index=dev)
        elif what == "route":
            ipr.route("del", family=socket.AF_INET, table=r.table(pid), dst_len=0, oif=dev,
                      proto=176)
        else:
            ipr.rule("del", family=socket.AF_INET, priority=r.priority(pid), fwmark=r.mark(pid),
                     fwmask=r.fwmark_mask, table=r.table(pid))
    return t0


def _present(lab, what: str, relay: str) -> bool:
    cfg = lab.configs["edge"]
    pid, r = cfg.path_id(relay), cfg.routing
    with lab.topo["edge"].ipr() as ipr:
        if not ipr.link_lookup(ifname=f"ag-{relay}"):
            return False
        if what == "route":
            return any(m["type"] == 1 for m in ipr.get_routes(family=socket.AF_INET,
                                                                table=r.table(pid)))
        if what == "rule":
            return any(m.get_attr("FRA_PRIORITY") == r.priority(pid)
                       for m in ipr.get_rules(family=socket.AF_INET))
        return True


# Each case leaves a relay once (one failure: its deletion). Before it, the
# case waits until that relay's flap penalty leaves room for this one failure
# (_settle_on), whatever earlier cases or a starved prober left, so "chosen
# again after recovery" is about the repair, not damping carried over.
@pytest.mark.parametrize("what,relay", [("link", "relay1"), ("route", "relay2"),
                                        ("rule", "relay1")])
def test_a_deleted_tunnel_route_or_rule_moves_traffic_and_is_repaired(tlab, what, relay):
    lab = tlab
    other = next(r for r in RELAYS if r != relay)
    _settle_on(lab, relay, {relay: 1, other: 0})
    d = lab.daemon                     # (a new one if _settle_on reloaded)
    stream = looplab.Stream(lab.topo["client"], pps=1000)
    try:
        assert lab.wait_for(lambda: lab.sink.by_link().get(f"to-{relay}", 0) > 50, 20)
        repairs, leak0 = d.watch.repairs, leaked(lab)
        t_call = time.monotonic()
        t0 = _delete(lab, what, relay)      # times count from the deletion itself
        assert lab.wait_for(lambda: _state(d, relay) is State.DOWN, 10)
        t_down = time.monotonic() - t0
        assert lab.wait_for(lambda: lab.choice() == other and
                            d.written["origin"][relay] == (0, False), 10)
        t_moved = time.monotonic() - t0
        print(f"\n{what} of {relay} deleted: down after {t_down:.3f} s, traffic moved after "
              f"{t_moved:.3f} s (detection time {DETECT_S} s; the netlink socket took "
              f"{t0 - t_call:.3f} s to open)")
        assert t_down <= BOUND_S and t_moved <= BOUND_S, (t_down, t_moved)
        got = _window(lab, stream)
        assert got.get(f"to-{other}", 0) >= 0.8 * got["sent"] > 20, got
        assert not got.get(f"to-{relay}"), got
        # recreated by the daemon, trusted again only after recovery, then chosen again
        assert lab.wait_for(lambda: d.watch.repairs > repairs and _present(lab, what, relay), 30)
        assert lab.wait_for(lambda: _state(d, relay) is State.UP, 30), _standing(d)
        # chosen again: within 60 s, plus the suppression the engine reports if
        # flaps during the case (a starved prober's) added to the deletion's
        wait = 60 + _reuse_wait(d, relay)
        assert lab.wait_for(lambda: lab.choice() == relay, wait), \
            (wait, d.engine.last("origin").reason, _standing(d), _since(d, t0))
        # The switch back (not a decision that kept it before the move) found the
        # path up again, i.e. after its recovery: the decision's own tiers say so
        # (a recovered_at read later may be a later recovery, if it flapped since).
        back = next(r for r in d.history if r.at >= t0 and r.choice == relay
                    and r.previous != relay)
        assert back.tiers[relay] in ("usable", "held"), (back, _since(d, t0))
        assert _connect_via(lab) == relay, (d.written["origin"], _standing(d), _since(d, t0))
        # the whole time, not one datagram of the client left through main
        assert leaked(lab) == leak0
    finally:
        stream.stop()


class Pinger:
    """ICMP echo from `host` to `dst` at `rate`/s (a raw socket, one id): which
    sequence numbers were answered, and when each was sent."""

    def __init__(self, host, dst: str, rate: float = 20):
        with host.inside():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.settimeout(0.05)
        self.dst, self.gap, self.ident = dst, 1.0 / rate, os.getpid() & 0xFFFF
        self.sent: dict[int, float] = {}
        self.answered: set[int] = set()
        self._halt = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    @staticmethod
    def _csum(b: bytes) -> int:
        s = sum(struct.unpack(f"!{len(b) // 2}H", b))
        s = (s >> 16) + (s & 0xFFFF)
        return ~(s + (s >> 16)) & 0xFFFF

    def _run(self):
        seq, nxt = 0, time.monotonic()
        while not self._halt.is_set():
            if time.monotonic() >= nxt:
                hdr = struct.pack("!BBHHH", 8, 0, 0, self.ident, seq) + b"truthful"
                pkt = hdr[:2] + struct.pack("!H", self._csum(hdr)) + hdr[4:]
                try:
                    self.sock.sendto(pkt, (self.dst, 0))
                    self.sent[seq] = time.monotonic()
                except OSError:
                    pass
                seq, nxt = (seq + 1) & 0xFFFF, nxt + self.gap
            try:
                data = self.sock.recv(1024)
            except (socket.timeout, OSError):
                continue
            icmp = data[(data[0] & 0x0F) * 4:]
            if len(icmp) >= 8 and icmp[0] == 0:
                ident, rseq = struct.unpack("!HH", icmp[4:8])
                if ident == self.ident:
                    self.answered.add(rseq)

    def ratio(self, since: float, until: float) -> tuple[int, int]:
        seqs = [s for s, t in list(self.sent.items()) if since <= t < until]
        return sum(1 for s in seqs if s in self.answered), len(seqs)

    def stop(self):
        self._halt.set()
        self._t.join(5)
        self.sock.close()


def test_b_a_relay_that_drops_the_lans_traffic_but_not_tunnel_probes_is_left(tlab):
    lab, t = tlab, tlab.topo
    bad, good = "relay2", "relay1"
    # bad fails here once (the drop); good must stay usable to be left to
    _settle_on(lab, bad, {bad: 1, good: 0})
    d = lab.daemon
    stream = looplab.Stream(t["client"], pps=200)
    ping = Pinger(t["client"], looplab.ORIGIN)
    rp = {"net.ipv4.conf.ag-edge.rp_filter": 1}
    try:
        t_s = time.monotonic()
        # all new flows on the bad relay (no split: the choice has weight 100)
        assert lab.wait_for(lambda: d.written["origin"][bad] == (100, True) and
                            lab.sink.by_link(since=t_s).get(f"to-{bad}", 0) > 20, 20), \
            (d.written["origin"], _since(d, t_s))
        assert _connect_via(lab) == bad, (d.written["origin"], _since(d, t_s))
        # The relay's reverse-path filter is strict on its tunnel from edge: the
        # client LAN (198.51.100.0/25) routes back by the underlay there, so its
        # packets are dropped; edge's tunnel address routes back by the tunnel,
        # so probes from it would still pass.
        t0 = time.monotonic()
        t[bad].sysctl(rp)
        assert lab.wait_for(lambda: lab.choice() == good and
                            d.written["origin"][bad] == (0, False), 10), _since(d, t0)
        left = time.monotonic() - t0
        print(f"\nrelay with strict rp_filter left after {left:.3f} s (bound {BOUND_S} s)")
        assert left <= BOUND_S
        t1 = time.monotonic() + 0.3
        got = _window(lab, stream, 1.5)
        assert got.get(f"to-{good}", 0) >= 0.8 * got["sent"] > 20, got       # UDP
        assert not got.get(f"to-{bad}"), got
        assert _connect_via(lab) == good, _since(d, t0)                      # new TCP
        ok, n = ping.ratio(t1, t1 + 1.0)           # ICMP (answers had time to come)
        assert n >= 5 and ok >= 0.8 * n, (ok, n)
        # not returned to while the drop stays: hold-down (2 s) and recovery
        # (3 probes) would both have passed several times over
        time.sleep(8)
        assert _state(d, bad) is State.DOWN
        assert not [r for r in d.history if r.at >= t0 + left and r.choice == bad], \
            _since(d, t0)
        assert d.written["origin"][bad] == (0, False)
        got = _window(lab, stream, 1.0)
        assert not got.get(f"to-{bad}"), got
    finally:
        t[bad].sysctl({"net.ipv4.conf.ag-edge.rp_filter": 2})
        ping.stop()
        stream.stop()
    assert lab.wait_for(lambda: _state(d, bad) is State.UP, 30)
