"""`argoctl responder`: the authenticated, rate-limited UDP echo server probes talk to.

Per datagram, cheapest check first: size and header (malformed), key id
(wrong_key), MAC (bad_mac), then a token bucket for the source address and a
global one (rate_limited_source / rate_limited_global). Only then a reply,
which is exactly as long as the request (mac.py: 64 bytes both ways), so the
responder never amplifies. Invalid requests never consume a source's tokens,
so forged floods with spoofed sources cannot starve real probers of their share.

Replies leave from the address the request was sent to (IP_PKTINFO /
IPV6_PKTINFO), so a responder bound to a wildcard on a multihomed host
answers from the address the prober checks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
import struct
import time
from collections import Counter
from typing import Callable, Optional

from argoctl.mac import REQUEST, SIZE, EchoKey, WireError
from argoctl.probe import big_rcvbuf

log = logging.getLogger(__name__)

DEFAULT_PORT = 7447
DEFAULT_RATE = 100.0          # requests/s per source address
DEFAULT_GLOBAL_RATE = 20000.0  # requests/s in total
MAX_SOURCES = 65536           # per-source buckets kept (idle ones are dropped first)

# Linux values (Python 3.11's socket module lacks IP_PKTINFO)
IP_PKTINFO = 8
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
_IN_PKTINFO = struct.Struct("=I4s4s")   # ifindex, spec_dst, addr
_IN6_PKTINFO = struct.Struct("=16sI")   # addr, ifindex


class TokenBucket:
    """`rate` tokens per second up to `burst`; take() spends one if there is one."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, now: float) -> bool:
        if now > self.stamp:  # a clock that stepped back refills nothing
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0 - 1e-9:  # float sums of rate * dt fall just short of 1
            self.tokens -= 1.0
            return True
        return False

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


def parse_listen(text: str) -> tuple[str, int]:
    """"0.0.0.0:7447", "[::]:7447", "198.51.100.1" -> (host, port); ValueError if bad."""
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"listen address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"listen address {text!r}: expected ':PORT' after ']'")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
        port = int(port)
    except ValueError:
        raise ValueError(f"listen address {text!r}: expected ADDR:PORT, e.g. 0.0.0.0:7447 "
                         f"or [::]:7447") from None
    if not 0 < port < 65536:
        raise ValueError(f"listen address {text!r}: port {port} out of range")
    return host, port


class Responder:
    """Serves the echo on one or more (host, port) addresses in an asyncio loop.

    `counters`: received, replied, malformed, wrong_key, bad_mac,
    rate_limited_source, rate_limited_global, send_errors."""

    def __init__(self, key: EchoKey, listen: list[tuple[str, int]], *,
                 rate: float = DEFAULT_RATE, burst: Optional[float] = None,
                 global_rate: float = DEFAULT_GLOBAL_RATE,
                 global_burst: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic,
                 realtime_ns: Callable[[], int] = time.time_ns):
        self.key = key
        self.listen = list(listen)
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.clock = clock
        self.realtime_ns = realtime_ns
        now = clock()
        self.global_bucket = TokenBucket(
            global_rate, global_burst if global_burst is not None else max(1.0, global_rate),
            now)
        self.buckets: dict[str, TokenBucket] = {}
        self.counters: Counter = Counter()
        self.socks: list[socket.socket] = []
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    def bind(self) -> None:
        """Open and bind every listen socket (all or none)."""
        try:
            for host, port in self.listen:
                v6 = ipaddress.ip_address(host).version == 6
                s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET,
                                  socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
                self.socks.append(s)
                big_rcvbuf(s)
                if v6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
                else:
                    s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                s.bind((host, port))
        except OSError:
            self.close()
            raise

    def start(self) -> None:
        if not self.socks:
            self.bind()
        self.loop = asyncio.get_running_loop()
        for s in self.socks:
            self.loop.add_reader(s.fileno(), self._readable, s)

    def close(self) -> None:
        for s in self.socks:
            if self.loop is not None:
                self.loop.remove_reader(s.fileno())
            s.close()
        self.socks = []

    async def serve(self, stop: asyncio.Event) -> None:
        self.start()
        try:
            await stop.wait()
        finally:
            self.close()

    def _readable(self, s: socket.socket) -> None:
        for _ in range(256):
            try:
                data, anc, _, src = s.recvmsg(SIZE + 1, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self.counters["received"] += 1
            reply = self.answer(data, src[0], self.clock())
            if reply is None:
                continue
            try:
                s.sendmsg([reply], _source_cmsg(anc), 0, src)
                self.counters["replied"] += 1
            except OSError:
                self.counters["send_errors"] += 1

    def answer(self, data: bytes, source: str, now: float) -> Optional[bytes]:
        """The reply to one datagram from `source`, or None (and the reason counted)."""
        rx = self.realtime_ns()
        try:
            request = self.key.parse(data)
        except WireError as e:
            self.counters[e.reason] += 1
            return None
        if request.type != REQUEST:  # a reply reflected at us
            self.counters["malformed"] += 1
            return None
        bucket = self.buckets.get(source)
        if bucket is None:
            if len(self.buckets) >= MAX_SOURCES:
                self._forget_idle(now)
            bucket = self.buckets[source] = TokenBucket(self.rate, self.burst, now)
        if not bucket.take(now):
            self.counters["rate_limited_source"] += 1
            return None
        if not self.global_bucket.take(now):
            self.counters["rate_limited_global"] += 1
            return None
        return self.key.reply(request, rx)

    def _forget_idle(self, now: float) -> None:
        idle = [src for src, b in self.buckets.items() if b.full(now)]
        for src in idle or list(self.buckets)[: len(self.buckets) // 2]:
            del self.buckets[src]


def _source_cmsg(anc: list) -> list:
    """Ancillary data making the reply leave from the request's destination address."""
    for level, type_, data in anc:
        if level == socket.IPPROTO_IP and type_ == IP_PKTINFO:
            _, _, dst = _IN_PKTINFO.unpack_from(data)
            return [(socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, dst, b"\0" * 4))]
        if level == socket.IPPROTO_IPV6 and type_ == IPV6_PKTINFO:
            dst, ifindex = _IN6_PKTINFO.unpack_from(data)
            # the interface matters only for link-local addresses
            keep = ifindex if dst[:2] == b"\xfe\x80" else 0
            return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(dst, keep))]
    return []


def format_counters(counters: Counter) -> str:
    names = ("received", "replied", "malformed", "wrong_key", "bad_mac",
             "rate_limited_source", "rate_limited_global", "send_errors")
    return " ".join(f"{n}={counters.get(n, 0)}" for n in names)


async def serve_until_signal(responder: Responder) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await responder.serve(stop)
