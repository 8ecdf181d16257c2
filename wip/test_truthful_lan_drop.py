"""Issue 15, "probes see what data sees", in the VM: NOT IN CI YET.

Its one VM run failed before the drop (a new TCP connection went through
relay1 while relay2 was chosen; the waits added since are unverified). Put
it back at the end of tests/integration/test_truthful.py (it uses that
module's `tlab` fixture, helpers and imports) once it passes there:

    /work/helpers/vmrun .venv/bin/python -m argoctl.lab.vm -- \
        .venv/bin/python -m pytest tests/integration/test_truthful.py -x -s

A relay whose reverse-path filter drops the client LAN's packets (probes leave
from edge's LAN address, so they meet the same filter) must be left by a UDP
stream, by ICMP and by new TCP connections within BOUND_S (3 s: detection
0.3-0.6 s plus a margin for the TCG guest), and not returned to while the
drop stays.
"""

import os
import struct
import threading



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
    lab, d, t = tlab, tlab.daemon, tlab.topo
    bad, good = "relay2", "relay1"     # relay2: one failure so far (damping stays low)
    _settle_on(lab, bad)
    stream = looplab.Stream(t["client"], pps=200)
    ping = Pinger(t["client"], looplab.ORIGIN)
    rp = {"net.ipv4.conf.ag-edge.rp_filter": 1}
    try:
        t_s = time.monotonic()
        assert lab.wait_for(lambda: d.written["origin"][bad][0] > 50 and
                            lab.sink.by_link(since=t_s).get(f"to-{bad}", 0) > 20, 20), \
            (d.written["origin"], d.engine.last("origin").reason)
        assert _connect_via(lab) == bad, (d.written["origin"], d.engine.last("origin").reason)
        # The relay's reverse-path filter is strict on its tunnel from edge: the
        # client LAN (198.51.100.0/25) routes back by the underlay there, so its
        # packets are dropped; edge's tunnel address routes back by the tunnel,
        # so probes from it would still pass.
        t0 = time.monotonic()
        t[bad].sysctl(rp)
        assert lab.wait_for(lambda: lab.choice() == good and
                            d.written["origin"][bad] == (0, False), 10), \
            d.engine.last("origin").reason
        left = time.monotonic() - t0
        print(f"\nrelay with strict rp_filter left after {left:.3f} s (bound {BOUND_S} s)")
        assert left <= BOUND_S
        t1 = time.monotonic() + 0.3
        got = _window(lab, stream, 1.5)
        assert got.get(f"to-{good}", 0) >= 0.8 * got["sent"] > 20, got       # UDP
        assert not got.get(f"to-{bad}"), got
        assert _connect_via(lab) == good                                     # new TCP
        ok, n = ping.ratio(t1, t1 + 1.0)           # ICMP (answers had time to come)
        assert n >= 5 and ok >= 0.8 * n, (ok, n)
        # not returned to while the drop stays: hold-down (2 s) and recovery
        # (3 probes) would both have passed several times over
        time.sleep(8)
        assert _state(d, bad) is State.DOWN
        assert not [r for r in d.history if r.at >= t0 + left and r.choice == bad]
        assert d.written["origin"][bad] == (0, False)
        got = _window(lab, stream, 1.0)
        assert not got.get(f"to-{bad}"), got
    finally:
        t[bad].sysctl({"net.ipv4.conf.ag-edge.rp_filter": 2})
        ping.stop()
        stream.stop()
    assert lab.wait_for(lambda: _state(d, bad) is State.UP, 30)
