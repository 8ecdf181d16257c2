"""Active probes per (destination, path), asyncio, each sent with the path's fwmark.

A socket that carries path N's mark (SO_MARK) is routed by the fwmark rule of
path N, so a probe takes exactly that path whatever its destination (direct
has its own mark too). Three kinds:

- `udp`: the authenticated echo to `argoctl responder` (format in mac.py).
  One socket per (mark, family), shared by every destination on that path;
  replies are matched by EchoTracker: valid MAC, a seq we have outstanding
  with the same sent/nonce, from the address we sent to, within the timeout,
  once. Everything else is counted (malformed, forged, replayed, late) and
  ignored. With the default clock the channel is NativeUdpChannel: the same
  job compiled (argoctl/_echo.c: scheduling, MAC, sendmmsg/recvmmsg,
  matching), since at thousands of probes a second the interpreter's ~45 us
  per probe was most of the agent's CPU; UdpChannel is the fallback when the
  extension is not built, and the reference the tests hold both to.
- `icmp`: echo request. Unprivileged ping socket (SOCK_DGRAM) if the
  namespace's ping_group_range allows it, else a raw socket; IPv4 and ICMPv6.
  Unauthenticated: replies must match source, seq and a random payload.
- `tcp`: non-blocking connect to target:port. A SYN-ACK (connected) or a RST
  (refused) both prove the path reaches the host; the socket is closed at
  once with an RST (linger 0). No answer within the timeout = loss.

Destinations that measure the same thing (Config.measurement: same probe,
same path) share one stream: one probe per interval for all of them, its
results addressed to the first (`PathProber.subscribers` lists them all).

Results go to `on_result(dest, path, seq, sent_at_ns, rtt_s_or_None, now_ns)`:
rtt None means the probe was lost (timed out, or the send failed /
came back unreachable, which is reported at once). Interval per prober is
policy.probe_interval_ms +- probe_jitter, divided by `fast_divisor` while
`in_doubt(dest, path)` is true. Clock: `clock()` in ns (monotonic, injectable).

Results of a udp stream on the compiled path can skip Python altogether: when
`sink(dest, path)` returns an argoctl._pathcore.PathState (the engine's, see
Engine.native_sink), the channel feeds it directly and calls
`on_change(dest, path)` only when a result changed the path's state.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import ipaddress
import itertools
import logging
import os
import random
import socket
import struct
import time
from collections import Counter, OrderedDict
from typing import Callable, Iterable, Optional

from argoctl import config as cfgmod
from argoctl.mac import NONCE_LEN, REPLY, EchoKey, WireError

try:   # the compiled udp path (argoctl/_echo.c, built by `pip install -e .`)
    from argoctl import _echo
except ImportError:   # not built: the Python channel does the same job, slower
    _echo = None

log = logging.getLogger(__name__)

OnResult = Callable[[str, str, int, int, Optional[float], int], None]
InDoubt = Callable[[str, str], bool]
Sink = Callable[[str, str], object]          # -> a _pathcore.PathState or None
OnChange = Callable[[str, str], None]

DEFAULT_UDP_PORT = 7447
_RCVBUF = 1 << 20
_READ_BATCH = 256
_DONE_WINDOW = 1 << 16  # finished seqs remembered per channel (replay/late verdicts)
_SO_TIMESTAMPNS = 35    # Linux; SCM_TIMESTAMPNS has the same value (not in Python 3.11)
_TIMESPEC = struct.Struct("=qq")
_TS_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
# struct tcp_info: 8 bytes of u8 fields, then u32s; tcpi_rtt (us) is the 16th u32
_TCPI_RTT = struct.Struct("=68xI")
_TCPI_RTT_END = _TCPI_RTT.size
# Compiled streams due per send tick above which replies are read on the ticks
# rather than on arrival (one wake-up per tick instead of one per few replies).
BUSY_PROBES_PER_TICK = 2
BUSY_HORIZON_S = 0.02


def _counted(i: int, attr: str) -> property:
    """A PathProber statistic: the Python attribute `attr`, or field i of the
    compiled channel's stream(slot) tuple once the stream is on the C path."""
    def get(self):
        return getattr(self, attr) if self.slot is None else self.channel.engine.stream(self.slot)[i]

    def put(self, v) -> None:
        setattr(self, attr, v)
    return property(get, put)


class PathProber:
    """State of one (destination, path): what to probe, through which mark, and
    running statistics (plain attributes: cheap to update, easy to render)."""

    __slots__ = ("dest", "path", "mark", "spec", "_seq", "_sent", "_received", "_lost",
                 "_errors", "_rtt_min", "_rtt_max", "_rtt_sum", "limit", "active", "channel",
                 "group", "subscribers", "addr", "slot")

    def __init__(self, dest: str, path: str, mark: int, spec: cfgmod.Probe,
                 limit: Optional[int] = None):
        self.dest, self.path, self.mark, self.spec = dest, path, mark, spec
        self._seq = self._sent = 0
        self._received = self._lost = self._errors = 0
        self._rtt_min = self._rtt_max = None
        self._rtt_sum = 0.0
        self.limit = limit      # stop after this many probes (one-shot use)
        self.active = True
        self.channel = None     # the scheduler's socket for (kind, mark, family)
        self.group = None       # sharing key (None: not shared)
        # (address, port) to send to: str() of an ip_address costs more than the send
        self.addr = (str(spec.target), spec.port)
        # every (dest, path) this stream measures; results go to the first
        self.subscribers: list[tuple[str, str]] = [(dest, path)]
        self.slot: Optional[int] = None   # its stream in a NativeUdpChannel

    # seq: the last seq sent (1-based), reported in on_result; sent: probes
    # sent; then results: received, lost (of which send errors), RTTs (s).
    # A stream on the compiled path counts them in C: read through.
    seq = _counted(0, "_seq")
    sent = _counted(1, "_sent")
    received = _counted(2, "_received")
    lost = _counted(3, "_lost")
    errors = _counted(4, "_errors")
    rtt_sum = _counted(5, "_rtt_sum")
    rtt_min = _counted(6, "_rtt_min")
    rtt_max = _counted(7, "_rtt_max")

    def __repr__(self) -> str:
        return f"<PathProber {self.dest}/{self.path} {self.spec.kind} mark={self.mark:#x}>"

    @property
    def rtt_avg(self) -> Optional[float]:
        return self.rtt_sum / self.received if self.received else None

    @property
    def finished(self) -> bool:
        return self.limit is not None and self.sent >= self.limit


class Outstanding:
    """Probes in flight on one channel, keyed by their wire key, expired in send
    order (the timeout is the same for all, so send order is deadline order)."""

    def __init__(self) -> None:
        self.pending: dict = {}   # key -> (prober, seq, sent_ns, deadline_ns, extra)
        self.rejects: Counter = Counter()

    def add(self, key, prober: PathProber, seq: int, sent: int, deadline: int, extra=None):
        self.pending[key] = (prober, seq, sent, deadline, extra)

    def next_deadline(self) -> Optional[int]:
        for entry in self.pending.values():
            return entry[3]
        return None

    def expire(self, now: int) -> list:
        out = []
        pending = self.pending
        while pending:
            key = next(iter(pending))
            entry = pending[key]
            if entry[3] > now:
                break
            del pending[key]
            self.expired(key, entry)
            out.append(entry)
        return out

    def expired(self, key, entry) -> None:
        """Hook: remember a timed-out key (for late verdicts) or free its resources."""


class _DoneWindow(Outstanding):
    """Outstanding plus a bounded memory of finished keys, so a second reply is a
    replay and a reply after the deadline is late (both counted, both ignored)."""

    def __init__(self) -> None:
        super().__init__()
        self.done: OrderedDict = OrderedDict()

    def finish(self, key, verdict: str) -> None:
        self.done[key] = verdict
        if len(self.done) > _DONE_WINDOW:
            self.done.popitem(last=False)

    def expired(self, key, entry) -> None:
        self.finish(key, "late")

    def take(self, key, now: int, valid: Callable[[tuple], bool], unknown: str):
        """The entry a reply for `key` answers, or None with the reject counted."""
        entry = self.pending.get(key)
        if entry is None:
            self.rejects[self.done.get(key, unknown)] += 1
            return None
        if not valid(entry):
            self.rejects["replayed"] += 1
            return None
        del self.pending[key]
        if now > entry[3]:
            self.finish(key, "late")
            self.rejects["late"] += 1
            return None
        self.finish(key, "replayed")
        return entry


class EchoTracker(_DoneWindow):
    """Matching of UDP echo replies (pure: no sockets, testable on bytes).

    `request()` makes a request and registers it; `match(data, src, now)` returns the
    (prober, seq, sent_ns, deadline, extra) entry the reply answers, or None
    after counting why in `rejects`: malformed, forged (bad MAC, wrong key, or
    not a reply), replayed (answered already, or a valid reply not for any
    request in flight: e.g. captured in an earlier run), late (after its
    timeout)."""

    def __init__(self, key: EchoKey, seqs: Optional[Iterable[int]] = None):
        super().__init__()
        self.key = key
        self.seqs = iter(seqs) if seqs is not None else itertools.count(1)
        # nonces need to be unique, not secret (the MAC is the secret part): a
        # PRNG seeded from the OS is far cheaper than a getrandom() per probe
        self._nonces = random.Random(os.urandom(32))

    def request(self, wire_seq: int, prober: PathProber, seq: int, sent: int,
                deadline: int, dst: tuple, nonce: Optional[bytes] = None) -> bytes:
        """Make a request datagram and register it as outstanding."""
        if nonce is None:
            nonce = self._nonces.getrandbits(8 * NONCE_LEN).to_bytes(NONCE_LEN, "big")
        self.add(wire_seq, prober, seq, sent, deadline, (nonce, dst))
        return self.key.request(wire_seq, sent, nonce)

    def match(self, data: bytes, src: tuple, now: int):
        try:
            echo = self.key.parse(data)
        except WireError as e:
            self.rejects["malformed" if e.reason == "malformed" else "forged"] += 1
            return None
        if echo.type != REPLY:
            self.rejects["forged"] += 1
            return None

        def same_request(entry) -> bool:
            nonce, dst = entry[4]
            return entry[2] == echo.sent and nonce == echo.nonce and _same_addr(dst, src)

        return self.take(echo.seq, now, same_request, "replayed")


def _same_addr(a: tuple, b: tuple) -> bool:
    if a[1] != b[1]:
        return False
    if a[0] == b[0]:
        return True
    try:
        return ipaddress.ip_address(a[0].split("%")[0]) == ipaddress.ip_address(b[0].split("%")[0])
    except ValueError:
        return False


# -- channels: the sockets, one per (kind, mark, family) --------------------------

def _family(addr) -> int:
    version = addr.version if hasattr(addr, "version") else ipaddress.ip_address(addr).version
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def _marked_socket(family: int, type_: int, proto: int, mark: int) -> socket.socket:
    s = socket.socket(family, type_ | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        if type_ != socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        s.close()
        raise
    return s


def big_rcvbuf(s: socket.socket) -> None:
    for opt in (33, socket.SO_RCVBUF):  # SO_RCVBUFFORCE (root) else capped by rmem_max
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, _RCVBUF)
            return
        except OSError:
            continue


class _Channel:
    kind = ""

    def __init__(self, sched: "ProbeScheduler", mark: int, family: int):
        self.sched, self.mark, self.family = sched, mark, family
        self.sock: Optional[socket.socket] = None
        self.track: Outstanding = Outstanding()

    @property
    def rejects(self) -> Counter:
        return self.track.rejects

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the socket (in the calling thread's network namespace) and read it."""
        self.sock = self.open()
        if self.sock is not None:
            loop.add_reader(self.sock.fileno(), self.drain)

    def open(self) -> Optional[socket.socket]:
        return None

    def close(self, loop: Optional[asyncio.AbstractEventLoop]) -> None:
        if self.sock is not None:
            if loop is not None:
                loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def drain(self) -> None:
        sock = self.sock
        if sock is None:
            return
        clock = self.sched.clock
        for _ in range(_READ_BATCH):
            try:
                data, anc, _, src = sock.recvmsg(2048, _TS_CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. ECONNREFUSED from an ICMP error: not a reply
                self.rejects["errors"] += 1
                log.debug("%s channel mark %#x: %s", self.kind, self.mark, e)
                continue
            # The kernel's arrival time, not ours: a busy host reading late must
            # not inflate RTTs or turn replies that came in time into losses.
            now = clock()
            for level, type_, ts in anc:
                if level == socket.SOL_SOCKET and type_ == _SO_TIMESTAMPNS and len(ts) >= 16:
                    sec, nsec = _TIMESPEC.unpack_from(ts)
                    now -= max(0, time.time_ns() - (sec * 1_000_000_000 + nsec))
            self.received(data, src, now)

    def received(self, data: bytes, src: tuple, now: int) -> None:
        """One datagram that arrived at `now` (clock ns)."""
        raise NotImplementedError

    def send(self, prober: PathProber, seq: int, sent: int, deadline: int) -> None:
        raise NotImplementedError


class UdpChannel(_Channel):
    kind = "udp"

    def __init__(self, sched, mark, family, key: EchoKey):
        super().__init__(sched, mark, family)
        self.track = EchoTracker(key, sched.wire_seqs)

    def open(self):
        s = _marked_socket(self.family, socket.SOCK_DGRAM, 0, self.mark)
        big_rcvbuf(s)
        return s

    def send(self, prober, seq, sent, deadline):
        dst = prober.addr if prober.addr[1] else (prober.addr[0], DEFAULT_UDP_PORT)
        wire_seq = next(self.track.seqs)
        data = self.track.request(wire_seq, prober, seq, sent, deadline, dst)
        try:
            self.sock.sendto(data, dst)
        except OSError:
            del self.track.pending[wire_seq]
            raise

    def received(self, data, src, now):
        entry = self.track.match(data, src, now)
        if entry is not None:
            self.sched.deliver(entry[0], entry[1], entry[2], now)


class NativeUdpChannel(UdpChannel):
    """UdpChannel with the hot path compiled (argoctl/_echo.c): the channel
    schedules its own streams (interval +- jitter, set by the scheduler),
    sends, matches and times out in C, and hands back results in batches.
    Same wire format, same verdicts and reject counters."""

    def __init__(self, sched, mark, family, key: EchoKey):
        super().__init__(sched, mark, family, key)
        self.key = key
        self.engine = None           # the _echo.Channel, made with the socket
        self.streams: list[PathProber] = []   # slot -> prober
        self._waiting: list[tuple[PathProber, float]] = []   # added before attach
        self.reading = False          # a reader callback is registered

    @property
    def rejects(self) -> Counter:
        return Counter(self.engine.rejects()) if self.engine is not None else Counter()

    def attach(self, loop):
        self.sock = self.open()
        s = self.sched
        self.engine = self.key.native_channel(self.sock.fileno(), self.family, s.timeout_ns,
                                              s.jitter, s.rng.getrandbits(63))
        waiting, self._waiting = self._waiting, []
        for prober, first in waiting:
            self.schedule(prober, first)
        self.reading = False
        self.read_on_ready(loop, not s.busy)

    def read_on_ready(self, loop, on: bool) -> None:
        """Drain when the socket turns readable (on), or only when the scheduler
        says (busy: every send tick drains, saving a wake-up per reply batch;
        the kernel's arrival timestamps keep RTTs exact either way)."""
        if self.sock is None or on == self.reading:
            return
        if on:
            loop.add_reader(self.sock.fileno(), self.drain)
        else:
            loop.remove_reader(self.sock.fileno())
        self.reading = on

    def schedule(self, prober: PathProber, first_due: float) -> None:
        """Start `prober`'s stream; first probe at loop time `first_due` (s)."""
        if self.engine is None:
            self._waiting.append((prober, first_due))
            return
        port = prober.addr[1] or DEFAULT_UDP_PORT
        prober.slot = self.engine.add(prober.addr[0], port, self.sched.base_interval_ns(prober),
                                      int(first_due * 1e9), -1 if prober.limit is None
                                      else prober.limit)
        self.streams.append(prober)
        sink = self.sched.sink
        core = sink(prober.dest, prober.path) if sink is not None else None
        if core is not None:
            self.engine.bind(prober.slot, core)

    def unschedule(self, prober: PathProber) -> None:
        if prober.slot is not None:
            self.engine.remove(prober.slot)
        else:
            self._waiting = [w for w in self._waiting if w[0] is not prober]

    def retime(self, prober: PathProber) -> None:
        if prober.slot is not None:
            self.engine.set_interval(prober.slot, self.sched.base_interval_ns(prober))

    def send_due(self, horizon: float) -> Optional[float]:
        """Send what is due by loop time `horizon`; the next due time (s) or None."""
        nxt = self.engine.send_due(int(horizon * 1e9))
        self.deliver_results()
        return None if nxt < 0 else nxt / 1e9

    def drain(self):
        if self.sock is not None:
            self.engine.drain()
            self.deliver_results()

    def expire(self, now: int) -> Optional[int]:
        """Time out what is overdue at `now` (ns); the next deadline or None."""
        self.engine.expire(now)
        self.deliver_results()
        d = self.engine.next_deadline()
        return None if d < 0 else d

    def deliver_results(self) -> None:
        # (counted in C; code 2, a failed send, is a loss reported at once)
        sched, streams = self.sched, self.streams
        for slot, seq, sent, at, code in self.engine.results():
            if code == 3:   # a bound stream's result changed its path's state
                sched.changed(streams[slot])
            else:
                sched.deliver(streams[slot], seq, sent, at, code != 0, counted=True)

    def idle(self) -> bool:
        if self.engine is None:
            return not any(p.limit is None or p.limit > 0 for p, _ in self._waiting)
        return self.engine.exhausted() and not self.engine.pending()


_ICMP = {
    socket.AF_INET: (socket.IPPROTO_ICMP, 8, 0),        # proto, echo request, echo reply
    socket.AF_INET6: (socket.IPPROTO_ICMPV6, 128, 129),
}
_ICMP_HDR = struct.Struct("!BBHHH")  # type, code, checksum, id, seq


def _inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ping_socket_allowed() -> bool:
    """Whether this namespace's ping_group_range admits one of our groups."""
    try:
        with open("/proc/sys/net/ipv4/ping_group_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return False
    return any(lo <= g <= hi for g in {os.getegid(), *os.getgroups()})


class IcmpChannel(_Channel):
    """Echo requests; `mode` dgram (ping socket), raw, or auto (dgram if allowed)."""

    kind = "icmp"

    def __init__(self, sched, mark, family, mode: str = "auto"):
        super().__init__(sched, mark, family)
        self.track = _DoneWindow()
        self.proto, self.req_type, self.rep_type = _ICMP[family]
        self.mode = mode
        self.ident = 0
        self._seq16 = itertools.count(random.getrandbits(16))
        self._payloads = random.Random(os.urandom(32))

    def open(self):
        if self.mode == "auto":  # decided where the socket is opened (its namespace)
            self.mode = "dgram" if ping_socket_allowed() else "raw"
        s = _marked_socket(self.family,
                           socket.SOCK_DGRAM if self.mode == "dgram" else socket.SOCK_RAW,
                           self.proto, self.mark)
        big_rcvbuf(s)
        # ping sockets: the kernel sets and demuxes the id (the socket's "port")
        self.ident = random.getrandbits(16) if self.mode == "raw" else 0
        return s

    def send(self, prober, seq, sent, deadline):
        wire_seq = next(self._seq16) & 0xFFFF
        payload = self._payloads.getrandbits(128).to_bytes(16, "big")
        hdr = _ICMP_HDR.pack(self.req_type, 0, 0, self.ident, wire_seq)
        if self.mode == "raw" and self.family == socket.AF_INET:
            csum = _inet_checksum(hdr + payload)
            hdr = _ICMP_HDR.pack(self.req_type, 0, csum, self.ident, wire_seq)
        # raw ICMPv6 and ping sockets: the kernel computes the checksum
        target = prober.addr[0]
        self.track.add(wire_seq, prober, seq, sent, deadline, (payload, target))
        try:
            self.sock.sendto(hdr + payload, (target, 0))
        except OSError:
            del self.track.pending[wire_seq]
            raise

    def received(self, data, src, now):
        if self.mode == "raw" and self.family == socket.AF_INET:
            if len(data) < 20:
                return
            data = data[(data[0] & 0x0F) * 4:]
        if len(data) < _ICMP_HDR.size:
            self.rejects["malformed"] += 1
            return
        type_, _, _, ident, wire_seq = _ICMP_HDR.unpack_from(data)
        if type_ != self.rep_type or (self.mode == "raw" and ident != self.ident):
            return  # a raw socket sees every ICMP message in the namespace
        payload = data[_ICMP_HDR.size:]

        def same(entry) -> bool:
            want, target = entry[4]
            return payload == want and _same_addr((target, 0), (src[0], 0))

        entry = self.track.take(wire_seq, now, same, "unmatched")
        if entry is not None:
            self.sched.deliver(entry[0], entry[1], entry[2], now)


class TcpChannel(_Channel):
    """One short-lived socket per probe; outstanding keyed by the socket."""

    kind = "tcp"

    def __init__(self, sched, mark, family):
        super().__init__(sched, mark, family)
        self.track = _TcpOutstanding(sched)

    def send(self, prober, seq, sent, deadline):
        s = _marked_socket(self.family, socket.SOCK_STREAM, 0, self.mark)
        # close() then sends an RST: no FIN exchange, no TIME_WAIT on either side
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rc = s.connect_ex((str(prober.spec.target), prober.spec.port))
        if rc not in (0, errno.EINPROGRESS, errno.ECONNREFUSED):
            s.close()
            raise OSError(rc, os.strerror(rc))
        self.track.add(s, prober, seq, sent, deadline)
        if rc == errno.EINPROGRESS:
            self.sched.loop.add_writer(s.fileno(), self._done, s)
        else:
            self._done(s, rc)

    def _done(self, s: socket.socket, rc: Optional[int] = None) -> None:
        entry = self.track.pending.pop(s, None)
        self.track.release(s)
        if entry is None:
            return
        if rc is None:
            rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        now = self.sched.clock()
        if rc == 0:
            # the kernel timed the handshake (SYN -> SYN-ACK): independent of
            # how late this loop noticed; 0 if it had no sample (SYN retransmitted)
            rtt_us = _TCPI_RTT.unpack_from(
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_RTT_END))[0]
            if rtt_us:
                now = min(now, entry[2] + rtt_us * 1000)
        s.close()
        if rc in (0, errno.ECONNREFUSED):  # SYN-ACK or RST: the host answered
            self.sched.deliver(entry[0], entry[1], entry[2], now)
        else:                              # unreachable (ICMP error) or similar
            self.track.rejects["unreachable"] += 1
            self.sched.deliver(entry[0], entry[1], entry[2], now, lost=True)

    def close(self, loop):
        for s in list(self.track.pending):
            self.track.release(s)
            s.close()
        self.track.pending.clear()


class _TcpOutstanding(Outstanding):
    def __init__(self, sched):
        super().__init__()
        self.sched = sched

    def release(self, s: socket.socket) -> None:
        if s.fileno() >= 0 and self.sched.loop is not None:
            self.sched.loop.remove_writer(s.fileno())

    def expired(self, s, entry) -> None:
        self.release(s)
        s.close()


# -- the scheduler -----------------------------------------------------------------

class _Timer:
    """One loop timer that only ever moves earlier until it fires (then re-armed)."""

    __slots__ = ("callback", "handle", "at")

    def __init__(self, callback: Callable[[], None]):
        self.callback, self.handle, self.at = callback, None, float("inf")

    def arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if at < self.at:
            if self.handle is not None:
                self.handle.cancel()
            self.at = at
            self.handle = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self.handle, self.at = None, float("inf")
        self.callback()

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.handle, self.at = None, float("inf")


class ProbeScheduler:
    """Every PathProber of a host in one event loop.

    add() probers (before or after start()); start() inside a running loop;
    stop() closes the sockets. Sockets are opened by start() (or by add() once
    started), in the network namespace of the thread running the loop. One UDP/ICMP socket per (kind, mark, family) is shared by
    all destinations on that path; a single timer drives all sends (heap of due
    times) and one more drives timeouts."""

    def __init__(self, on_result: OnResult, *, in_doubt: Optional[InDoubt] = None,
                 interval_ms: float = 1000, jitter: float = 0.1, timeout_ms: float = 1000,
                 fast_divisor: float = 4, key: Optional[EchoKey] = None,
                 clock: Callable[[], int] = time.monotonic_ns,
                 rng: Optional[random.Random] = None, icmp_mode: str = "auto",
                 intervals: Optional[dict[str, float]] = None, tick_ms: float = 5,
                 native: Optional[bool] = None, sink: Optional[Sink] = None,
                 on_change: Optional[OnChange] = None):
        """`native`: udp streams on the compiled path (argoctl._echo), which
        times with CLOCK_MONOTONIC; None = when it is built and `clock` is
        time.monotonic_ns. `sink` and `on_change`: see the module's docstring
        (both or neither; used by native udp streams only)."""
        if (sink is None) != (on_change is None):
            raise ValueError("sink and on_change go together")
        if native is None:
            native = _echo is not None and clock is time.monotonic_ns
        elif native and (_echo is None or clock is not time.monotonic_ns):
            raise ValueError("native udp probes need argoctl._echo and clock=time.monotonic_ns")
        self.native = native
        self.on_result = on_result
        self.sink, self.on_change = sink, on_change
        self.in_doubt = in_doubt
        self.interval_ms = interval_ms
        self.intervals = dict(intervals or {})   # per-destination override (ms)
        # busy: how far ahead to send, at most a tenth of the fastest interval
        # (in-doubt probing included) and BUSY_HORIZON_S
        fastest_s = min([interval_ms, *self.intervals.values()]) / fast_divisor / 1000.0
        self._ahead = min(BUSY_HORIZON_S, fastest_s / 10)
        self.jitter = jitter
        self.timeout_ns = int(timeout_ms * 1e6)
        self.fast_divisor = fast_divisor
        self.tick = tick_ms / 1000.0
        self.key = key
        self.clock = clock
        self.rng = rng or random.Random()
        self.icmp_mode = icmp_mode
        self.wire_seqs = itertools.count(1)       # UDP echo seqs, unique across channels
        self.probers: dict[tuple[str, str], PathProber] = {}   # shared streams appear once per subscriber
        self._groups: dict[tuple, PathProber] = {}
        self.channels: dict[tuple[str, int, int], _Channel] = {}
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._heap: list = []
        self._tie = itertools.count()
        self._send_timer = _Timer(self._send_due)
        self._sweep_timer = _Timer(self._sweep)
        self._idle: Optional[asyncio.Future] = None
        self._native_rate = 0.0    # probes/s of started compiled streams (see busy)

    # -- building ---------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: cfgmod.Config, on_result: OnResult, *,
                    key: Optional[EchoKey] = None, count: Optional[int] = None,
                    share: bool = True, **kw) -> "ProbeScheduler":
        """A scheduler probing every (destination, path) of a config that has a probe;
        `share`: destinations measuring the same thing share streams (Config.measurement)."""
        pol = cfg.policy
        kw.setdefault("interval_ms", pol.probe_interval_ms)
        kw.setdefault("jitter", pol.probe_jitter)
        kw.setdefault("timeout_ms", pol.probe_timeout_ms)
        sched = cls(on_result, key=key, **kw)
        for dest in cfg.destinations:
            if dest.probe is None:
                continue
            for path in dest.paths:
                mark = cfg.routing.mark(cfg.path_id(path))
                sched.add(dest.name, path, mark, dest.probe, limit=count,
                          group=cfg.measurement(dest, path) if share else None)
        return sched

    def add(self, dest: str, path: str, mark: int, spec: cfgmod.Probe,
            limit: Optional[int] = None, group=None) -> PathProber:
        """Probe `spec` through `mark` for (dest, path). With a `group` (any
        hashable; see Config.measurement), (dest, path)s of the same group and
        mark share one stream: one probe per interval, one result addressed to
        the stream's first subscriber (its consumer knows who shares it)."""
        if (dest, path) in self.probers:
            raise ValueError(f"already probing {dest} via {path}")
        if spec.kind == "udp" and self.key is None:
            raise ValueError(f"{dest}: udp probes need the responder key (policy.responder_key_file)")
        if spec.kind == "tcp" and not spec.port:
            raise ValueError(f"{dest}: tcp probes need a port")
        if group is not None:
            shared = self._groups.get((group, mark))
            if shared is not None and shared.active:
                shared.subscribers.append((dest, path))
                self.probers[(dest, path)] = shared
                return shared
        prober = PathProber(dest, path, mark, spec, limit)
        prober.channel = self._channel(spec.kind, mark, _family(spec.target))
        if group is not None:
            prober.group = (group, mark)
            self._groups[prober.group] = prober
        self.probers[(dest, path)] = prober
        if self.loop is not None:
            self._start_stream(prober)
            self._set_reading()
        return prober

    def remove(self, dest: str, path: str) -> None:
        """Stop probing for (dest, path); a shared stream goes on for the others
        (the next subscriber receives its results). Results still in flight for
        a stream that stops are dropped."""
        prober = self.probers.pop((dest, path))
        prober.subscribers.remove((dest, path))
        if prober.subscribers:
            prober.dest, prober.path = prober.subscribers[0]
            return
        prober.active = False
        if isinstance(prober.channel, NativeUdpChannel):
            prober.channel.unschedule(prober)
            if self.loop is not None:
                self._native_rate -= self._stream_rate(prober)
            self._set_reading()
        if prober.group is not None and self._groups.get(prober.group) is prober:
            del self._groups[prober.group]

    def _channel(self, kind: str, mark: int, family: int) -> _Channel:
        k = (kind, mark, family)
        ch = self.channels.get(k)
        if ch is None:
            if kind == "udp":
                ch = (NativeUdpChannel if self.native else UdpChannel)(self, mark, family,
                                                                       self.key)
            elif kind == "icmp":
                ch = IcmpChannel(self, mark, family, self.icmp_mode)
            elif kind == "tcp":
                ch = TcpChannel(self, mark, family)
            else:
                raise ValueError(f"unknown probe kind {kind!r}")
            self.channels[k] = ch
            if self.loop is not None:
                ch.attach(self.loop)
        return ch

    # -- running ----------------------------------------------------------------

    def start(self) -> None:
        """Begin probing; each prober's first probe at a random point of its interval."""
        self.loop = asyncio.get_running_loop()
        for ch in self.channels.values():
            ch.attach(self.loop)
        for prober in self.streams():
            self._start_stream(prober)
        self._set_reading()

    def _start_stream(self, prober: PathProber) -> None:
        delay = self.rng.random() * self._interval(prober)
        if isinstance(prober.channel, NativeUdpChannel):
            at = self.loop.time() + delay
            prober.channel.schedule(prober, at)
            self._native_rate += self._stream_rate(prober)
            self._send_timer.arm(self.loop, at)
        else:
            self._schedule(prober, delay)

    def _native(self) -> list[NativeUdpChannel]:
        return [ch for ch in self.channels.values() if isinstance(ch, NativeUdpChannel)]

    @property
    def busy(self) -> bool:
        """Compiled streams send often enough that the send timer fires every
        tick or so: replies are then read on those ticks, not on arrival."""
        return self._native_rate * self.tick >= BUSY_PROBES_PER_TICK

    def _stream_rate(self, prober: PathProber) -> float:
        return 1000.0 / self.intervals.get(prober.dest, self.interval_ms)

    def _set_reading(self) -> None:
        if self.loop is None:
            return
        on = not self.busy
        for ch in self._native():
            ch.read_on_ready(self.loop, on)

    def retime(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Recompute the interval of these (dest, path)s' streams: their doubt
        changed. (Python streams recompute it at every probe anyway.)"""
        for pair in pairs:
            prober = self.probers.get(pair)
            if prober is not None and isinstance(prober.channel, NativeUdpChannel):
                prober.channel.retime(prober)

    def streams(self) -> list[PathProber]:
        """Each probe stream once (a shared one is in `probers` once per subscriber)."""
        return list({id(p): p for p in self.probers.values()}.values())

    def stop(self) -> None:
        """Stop sending and close every socket (not restartable)."""
        self._send_timer.cancel()
        self._sweep_timer.cancel()
        for ch in self.channels.values():  # kept: their counters stay readable
            ch.close(self.loop)
        self._heap.clear()

    async def wait_idle(self) -> None:
        """Wait until every prober with a limit has sent it and nothing is in flight."""
        if self._is_idle():
            return
        self._idle = self.loop.create_future()
        await self._idle

    def rejects(self) -> dict[str, Counter]:
        """Rejected replies per path name: malformed, forged, replayed, late, ..."""
        by_mark: dict[int, Counter] = {}
        for (kind, mark, _), ch in self.channels.items():
            by_mark.setdefault(mark, Counter()).update(ch.rejects)
        out: dict[str, Counter] = {}
        for prober in self.probers.values():
            if prober.mark in by_mark:
                out[prober.path] = by_mark[prober.mark]
        return out

    def _base_ms(self, prober: PathProber) -> float:
        """The prober's interval before jitter (ms): faster while in doubt."""
        ms = self.intervals.get(prober.dest, self.interval_ms) if self.intervals \
            else self.interval_ms
        if self.in_doubt is not None and self.in_doubt(prober.dest, prober.path):
            ms /= self.fast_divisor
        return ms

    def base_interval_ns(self, prober: PathProber) -> int:
        return max(1, int(self._base_ms(prober) * 1e6))

    def _interval(self, prober: PathProber) -> float:
        """Seconds until the next probe of this prober."""
        ms = self._base_ms(prober)
        if self.jitter:
            ms *= 1.0 + self.jitter * (2.0 * self.rng.random() - 1.0)
        return ms / 1000.0

    def _schedule(self, prober: PathProber, delay: float) -> None:
        at = self.loop.time() + delay
        heapq.heappush(self._heap, (at, next(self._tie), prober))
        self._send_timer.arm(self.loop, at)

    def _send_due(self) -> None:
        heap = self._heap
        # sends due within a tick go out together: one wake-up for many probes
        horizon = self.loop.time() + self.tick
        while heap and heap[0][0] <= horizon:
            _, _, prober = heapq.heappop(heap)
            if not prober.active:
                continue
            self._probe(prober)
            if not prober.finished:
                heapq.heappush(heap, (self.loop.time() + self._interval(prober),
                                      next(self._tie), prober))
        if heap:
            self._send_timer.arm(self.loop, heap[0][0])
        if self.busy:
            # many streams: send further ahead so each sendmmsg carries more
            horizon = max(horizon, self.loop.time() + self._ahead)
        for ch in self._native():
            if not ch.reading:
                ch.drain()     # busy: replies are read here (before any timeout)
            nxt = ch.send_due(horizon)
            if nxt is not None:
                self._send_timer.arm(self.loop, nxt)
            if self._sweep_timer.handle is None and ch.engine.pending():
                self._arm_sweep(ch.engine.next_deadline())
        self._check_idle()

    def _probe(self, prober: PathProber) -> None:
        ch = prober.channel
        prober.seq += 1
        prober.sent += 1
        now = self.clock()
        deadline = now + self.timeout_ns
        try:
            ch.send(prober, prober.seq, now, deadline)
        except OSError as e:  # no route on this path, rejected by a filter, ...
            ch.rejects["send_errors"] += 1
            log.debug("%s via %s: send failed: %s", prober.dest, prober.path, e)
            prober.errors += 1
            self.deliver(prober, prober.seq, now, self.clock(), lost=True)
            return
        if self._sweep_timer.handle is None:  # else armed for an earlier deadline
            self._arm_sweep(deadline)

    def _arm_sweep(self, deadline_ns: int) -> None:
        delay = max(0, deadline_ns - self.clock()) / 1e9
        self._sweep_timer.arm(self.loop, self.loop.time() + delay)

    def _sweep(self) -> None:
        now = self.clock()
        nxt = None
        for ch in self.channels.values():
            ch.drain()  # replies already queued are not losses, however late we run
            if isinstance(ch, NativeUdpChannel):
                d = ch.expire(now) if ch.engine is not None else None
            else:
                for entry in ch.track.expire(now):
                    self.deliver(entry[0], entry[1], entry[2], now, lost=True)
                d = ch.track.next_deadline()
            if d is not None and (nxt is None or d < nxt):
                nxt = d
        if nxt is not None:
            self._arm_sweep(nxt)
        self._check_idle()

    def deliver(self, prober: PathProber, seq: int, sent: int, now: int,
                lost: bool = False, counted: bool = False) -> None:
        """One result to on_result (`counted`: the compiled channel already
        counted it in the prober's statistics)."""
        if not prober.active:
            return
        if lost:
            rtt = None
            if not counted:
                prober._lost += 1
        else:
            rtt = max(0, now - sent) / 1e9  # arrival time is mapped from the realtime clock
            if not counted:
                prober._received += 1
                prober._rtt_sum += rtt
                if prober._rtt_min is None or rtt < prober._rtt_min:
                    prober._rtt_min = rtt
                if prober._rtt_max is None or rtt > prober._rtt_max:
                    prober._rtt_max = rtt
        try:
            self.on_result(prober.dest, prober.path, seq, sent, rtt, now)
        except Exception:  # a consumer bug must not stop the probes
            log.exception("on_result failed for %s via %s", prober.dest, prober.path)
        if self._idle is not None:
            self._check_idle()

    def changed(self, prober: PathProber) -> None:
        """A bound stream's result changed its path's state (fed in C)."""
        if not prober.active:
            return
        try:
            self.on_change(prober.dest, prober.path)
        except Exception:  # a consumer bug must not stop the probes
            log.exception("on_change failed for %s via %s", prober.dest, prober.path)
        if self._idle is not None:
            self._check_idle()

    def _is_idle(self) -> bool:
        for ch in self.channels.values():
            if isinstance(ch, NativeUdpChannel):
                if not ch.idle():
                    return False
            elif ch.track.pending:
                return False
        return all(p.finished for p in self.probers.values()
                   if not isinstance(p.channel, NativeUdpChannel))

    def _check_idle(self) -> None:
        if self._idle is not None and not self._idle.done() and self._is_idle():
            self._idle.set_result(None)


# -- one-shot measurement (`argoctl probe`) -----------------------------------------

def summary(p: PathProber, dest: Optional[str] = None, path: Optional[str] = None) -> dict:
    """A prober's statistics as plain values (ms), for tables and JSON; `dest` and
    `path` name the row when the stream is shared (default: its first subscriber)."""
    def ms(v):
        return None if v is None else round(v * 1000, 3)
    done = p.received + p.lost
    return {
        "destination": dest or p.dest, "path": path or p.path, "kind": p.spec.kind,
        "target": str(p.spec.target), "port": p.spec.port, "mark": p.mark,
        "sent": p.sent, "received": p.received, "lost": p.lost, "send_errors": p.errors,
        "loss": round(p.lost / done, 4) if done else None,
        "rtt_min_ms": ms(p.rtt_min), "rtt_avg_ms": ms(p.rtt_avg), "rtt_max_ms": ms(p.rtt_max),
        "state": "up" if p.received else "down",
    }


async def probe_once(cfg: cfgmod.Config, key: Optional[EchoKey], count: int,
                     interval_ms: Optional[float] = None) -> tuple[list[dict], dict]:
    """Probe every (destination, path) of `cfg` `count` times; (summaries, rejects)."""
    kw = {} if interval_ms is None else {"interval_ms": interval_ms}
    sched = ProbeScheduler.from_config(cfg, lambda *a: None, key=key, count=count, **kw)
    sched.start()
    try:
        await sched.wait_idle()
        return ([summary(p, d, path) for (d, path), p in sched.probers.items()],
                {path: dict(c) for path, c in sched.rejects().items()})
    finally:
        sched.stop()
