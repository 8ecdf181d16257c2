"""What a probe stream knows: outstanding probes, late and duplicate replies, and
the per-(destination, path) statistics PathProber keeps."""

from __future__ import annotations

import ipaddress
import itertools
import os
import random
import socket
import struct
from collections import Counter, OrderedDict
from typing import Callable, Iterable, Optional

from argoctl import config as cfgmod
from argoctl.mac import NONCE_LEN, REPLY, EchoKey, WireError



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
                 "group", "subscribers", "addr", "slot", "pace", "gen")

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
        self.pace = 1           # probed every `pace` intervals (fleet mode: ProbeScheduler.pace)
        self.gen = 0            # bumped by a poll: older heap entries are dropped

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


