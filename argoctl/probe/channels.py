"""The probe sockets, one channel per (kind, mark, family): UDP echo with MAC
(compiled or Python), ICMP echo, TCP SYN."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import itertools
import logging
import os
import random
import socket
import struct
import time
from collections import Counter
from typing import Optional

from argoctl.mac import EchoKey

log = logging.getLogger(__name__)


from argoctl.probe.results import *  # noqa: F401,F403
from argoctl.probe.results import (_READ_BATCH, _RCVBUF, _SO_TIMESTAMPNS, _TCPI_RTT, _TCPI_RTT_END, _TIMESPEC,
                                   _TS_CMSG_SPACE, _DoneWindow, _same_addr)

# -- channels: the sockets, one per (kind, mark, family) --------------------------

def _family(addr) -> int:
    version = addr.version if hasattr(addr, "version") else ipaddress.ip_address(addr).version
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def _marked_socket(family: int, type_: int, proto: int, mark: int,
                   source: Optional[str] = None) -> socket.socket:
    """A probe socket: the path's mark, and (if given) the source address the
    traffic it stands for has (ProbeScheduler's `sources`: see docs/engine.md)."""
    s = socket.socket(family, type_ | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        if type_ != socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        if source:
            s.bind((source, 0))
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
        self.source: Optional[str] = sched.sources.get(family)
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
        s = _marked_socket(self.family, socket.SOCK_DGRAM, 0, self.mark, self.source)
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

    def poll(self, prober: PathProber, at: float) -> None:
        """Its next probe at loop time `at` (s), at its (new) interval after."""
        if prober.slot is not None:
            self.engine.set_interval(prober.slot, self.sched.base_interval_ns(prober))
            self.engine.poll(prober.slot, int(at * 1e9))
        else:
            self._waiting = [(p, at if p is prober else due) for p, due in self._waiting]

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
            if code == RESULT_CHANGED:   # a bound stream's result changed its path's state
                sched.changed(streams[slot])
            else:
                sched.deliver(streams[slot], seq, sent, at, code != RESULT_REPLY, counted=True)

    def idle(self) -> bool:
        if self.engine is None:
            return not any(p.limit is None or p.limit > 0 for p, _ in self._waiting)
        return self.engine.exhausted() and not self.engine.pending()


# the compiled channel's result codes (_echo.c: CODE_*)
RESULT_REPLY, RESULT_TIMEOUT, RESULT_SEND_ERROR, RESULT_CHANGED = 0, 1, 2, 3

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
                           self.proto, self.mark, self.source)
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
        s = _marked_socket(self.family, socket.SOCK_STREAM, 0, self.mark, self.source)
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


