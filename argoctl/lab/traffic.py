"""Lab traffic: a UDP echo service on the origin and request/response clients.

A client sends one request every 1/rate s. Each attempt goes out on a fresh
socket (a new source port, i.e. a new flow, as a DNS stub resolver does), so a
path change made by the datapath applies to the next attempt; an unanswered
attempt is retried after `attempt_timeout`, and the request counts as failed if
no answer (to any of its attempts) arrives within `deadline`. Latency is from
the first attempt to the first answer, measured by the client.

Clients and server run as threads inside their host's namespace (one process:
a new Python process costs seconds in the VM)."""

from __future__ import annotations

import json
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

ECHO_PORT = 9100
IP_PKTINFO = 8                     # linux/in.h (the socket module has it from 3.12 only)
# client id, request id, attempt: the echo returns all three, so both ends of a
# path can tell which attempt of which request they saw (bench peers).
MSG = struct.Struct("!IQI")
_PAD = bytes(52)


class EchoServer:
    """Answers every datagram on ECHO_PORT with the same bytes (the origin's service).

    Bound to the service address, not the wildcard: a reply must come from the
    address the request went to, or a relay's NAT cannot match it to the
    request (and a wildcard socket answers from the routed source address)."""

    def __init__(self, host, address: str, port: int = ECHO_PORT, *, ingress: bool = False):
        with host.inside():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.bind((address, port))
        self.sock.settimeout(0.2)
        self.answered = 0
        # ingress: note (time, request id, attempt, interface) of every request
        self.host, self.ingress = host, ingress
        self.seen: list[tuple[float, int, int, str]] = []
        self._ifnames: dict[int, str] = self._links() if ingress else {}
        if ingress:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self._halt = threading.Event()
        self._t = threading.Thread(target=self._loop, name="echo", daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._halt.is_set():
            try:
                data, anc, _, peer = self.sock.recvmsg(2048, 64)
                now = time.monotonic()
                self.sock.sendto(data, peer)
                self.answered += 1
            except socket.timeout:
                continue
            except OSError:
                if self._halt.is_set():
                    return
                continue
            if self.ingress and len(data) >= MSG.size:
                _, rid, attempt = MSG.unpack_from(data)
                self.seen.append((now, rid, attempt, self._ifname(anc)))

    def _ifname(self, anc) -> str:
        index = next((struct.unpack_from("=I", data)[0] for level, kind, data in anc
                      if level == socket.IPPROTO_IP and kind == IP_PKTINFO), 0)
        if index not in self._ifnames:     # a link made since
            self._ifnames = self._links()
        return self._ifnames.get(index, "?")

    def _links(self) -> dict[int, str]:
        # `ip` in the host: this thread is not in its namespace (if_indextoname would be)
        out = self.host.run(["ip", "-j", "link", "show"], check=True).stdout
        return {link["ifindex"]: link["ifname"] for link in json.loads(out)}

    def stop(self) -> None:
        self._halt.set()
        self._t.join(5)
        self.sock.close()


@dataclass
class Request:
    rid: int
    started: float                      # monotonic
    sent: list[float] = field(default_factory=list)    # monotonic time of each attempt
    latency: Optional[float] = None     # seconds; None: failed or pending
    done: bool = False

    @property
    def attempts(self) -> int:
        return len(self.sent)

    @property
    def last_sent(self) -> float:
        return self.sent[-1] if self.sent else 0.0


@dataclass(frozen=True)
class Stats:
    requests: int
    ok: int
    median_ms: Optional[float]
    p95_ms: Optional[float]

    @property
    def success_pct(self) -> Optional[float]:
        return None if not self.requests else 100.0 * self.ok / self.requests

    def to_dict(self) -> dict:
        r = lambda v, n=2: None if v is None else round(v, n)   # noqa: E731
        return {"requests": self.requests, "ok": self.ok, "failed": self.requests - self.ok,
                "success_pct": r(self.success_pct, 3), "median_ms": r(self.median_ms),
                "p95_ms": r(self.p95_ms)}


def _quantile(sorted_values: list[float], q: float) -> Optional[float]:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[i]


class RequestClient:
    """Requests from `host` to (dst, port) at `rate` per second until stop()."""

    def __init__(self, host, dst: str, *, rate: float = 25.0, port: int = ECHO_PORT,
                 attempt_timeout: float = 0.25, deadline: float = 1.0, client_id: int = 0):
        self.host, self.dst, self.rate = host, (dst, port), rate
        self.attempt_timeout, self.deadline, self.client_id = attempt_timeout, deadline, client_id
        self.requests: list[Request] = []
        self._halt = threading.Event()
        self._t = threading.Thread(target=self._run, name=f"client-{host.name}", daemon=True)
        self._t.start()

    # -- the sending loop (in the host's namespace) ------------------------------------

    def _run(self) -> None:
        with self.host.inside():
            self._loop()

    def _send(self, sel, req: Request, now: float) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            s.sendto(MSG.pack(self.client_id, req.rid, req.attempts) + _PAD, self.dst)
        except OSError:
            pass            # no route / refused: the retry or the deadline decides
        sel.register(s, selectors.EVENT_READ, req)
        req.sent.append(now)

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        gap = 1.0 / self.rate
        next_at = time.monotonic()
        live: dict[int, Request] = {}
        try:
            while not self._halt.is_set():
                now = time.monotonic()
                if now >= next_at:
                    req = Request(len(self.requests), now)
                    self.requests.append(req)
                    live[req.rid] = req
                    self._send(sel, req, now)
                    next_at += gap
                    if next_at < now - 1.0:         # a stalled VM: do not burst
                        next_at = now + gap
                wake = min([next_at, *(min(r.last_sent + self.attempt_timeout,
                                           r.started + self.deadline) for r in live.values())])
                for key, _ in sel.select(max(0.0, min(wake - now, 0.05))):
                    try:
                        data = key.fileobj.recv(2048)
                    except OSError:
                        continue
                    if len(data) < MSG.size:
                        continue
                    _, rid, _ = MSG.unpack_from(data)
                    req = live.get(rid)
                    if req is not None and not req.done:
                        req.latency = time.monotonic() - req.started
                        req.done = True
                now = time.monotonic()
                for rid, req in list(live.items()):
                    if req.done or now - req.started >= self.deadline:
                        req.done = True
                        del live[rid]
                        self._close(sel, req)
                    elif now - req.last_sent >= self.attempt_timeout:
                        self._send(sel, req, now)
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()

    @staticmethod
    def _close(sel, req: Request) -> None:
        for key in [k for k in sel.get_map().values() if k.data is req]:
            sel.unregister(key.fileobj)
            key.fileobj.close()

    def stop(self) -> None:
        self._halt.set()
        self._t.join(5)

    # -- results -----------------------------------------------------------------------

    def stats(self, since: float = 0.0, until: float = float("inf")) -> Stats:
        """Requests started in [since, until) that are finished (answered or timed out)."""
        reqs = [r for r in list(self.requests) if since <= r.started < until and r.done]
        lat = sorted(r.latency for r in reqs if r.latency is not None)
        return Stats(len(reqs), len(lat), _ms(_quantile(lat, 0.5)), _ms(_quantile(lat, 0.95)))

    def recent(self, seconds: float) -> Stats:
        """The last `seconds` of finished requests (for a live view)."""
        now = time.monotonic()
        return self.stats(now - seconds - self.deadline, now - self.deadline)


def _ms(v: Optional[float]) -> Optional[float]:
    return None if v is None else v * 1000.0
