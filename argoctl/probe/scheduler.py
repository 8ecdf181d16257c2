"""The probe scheduler: when each stream sends, over which channel, and where each
result goes (the estimators, the engine)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections import Counter
from typing import Callable, Iterable, Optional

from argoctl import config as cfgmod
from argoctl.mac import EchoKey

try:   # the compiled udp path (argoctl/_echo.c, built by `pip install -e .`)
    from argoctl import _echo
except ImportError:   # not built: the Python channel does the same job, slower
    _echo = None

log = logging.getLogger(__name__)

OnResult = Callable[[str, str, int, int, Optional[float], int], None]
InDoubt = Callable[[str, str], bool]
Sink = Callable[[str, str], object]          # -> a _pathcore.PathState or None
OnChange = Callable[[str, str], None]

from argoctl.probe.results import *  # noqa: F401,F403
from argoctl.probe.channels import *  # noqa: F401,F403
from argoctl.probe.channels import _Channel, _family

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
                 fast_divisor: float = cfgmod.FAST_DIVISOR, key: Optional[EchoKey] = None,
                 clock: Callable[[], int] = time.monotonic_ns,
                 rng: Optional[random.Random] = None, icmp_mode: str = "auto",
                 intervals: Optional[dict[str, float]] = None, tick_ms: float = 5,
                 native: Optional[bool] = None, sink: Optional[Sink] = None,
                 on_change: Optional[OnChange] = None,
                 sources: Optional[dict[int, str]] = None):
        """`native`: udp streams on the compiled path (argoctl._echo), which
        times with CLOCK_MONOTONIC; None = when it is built and `clock` is
        time.monotonic_ns. `sink` and `on_change`: see the module's docstring
        (both or neither; used by native udp streams only). `sources`: socket
        family -> the address every probe of that family is sent from (None:
        the kernel's choice, i.e. the tunnel's own address on a relay path)."""
        if (sink is None) != (on_change is None):
            raise ValueError("sink and on_change go together")
        if native is None:
            native = _echo is not None and clock is time.monotonic_ns
        elif native and (_echo is None or clock is not time.monotonic_ns):
            raise ValueError("native udp probes need argoctl._echo and clock=time.monotonic_ns")
        self.native = native
        self.sources = dict(sources or {})
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
        kw.setdefault("fast_divisor", pol.timing.fast_divisor)
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

    def pace(self, dest: str, path: str, n: int, now_poll: bool = True) -> None:
        """Probe the stream measuring (dest, path) every n intervals (fleet mode's
        rates: argoctl/fleet/rates.py). Faster than before and `now_poll`: its
        next probe goes out now (a poll), not when the slow schedule had it due;
        slower: from its next probe on."""
        prober = self.probers.get((dest, path))
        if prober is None or prober.pace == n:
            return
        faster = n < prober.pace
        prober.pace = n
        if isinstance(prober.channel, NativeUdpChannel):
            if faster and now_poll and self.loop is not None:
                prober.channel.poll(prober, self.loop.time())
                self._send_timer.arm(self.loop, self.loop.time())
            else:
                prober.channel.retime(prober)
        elif faster and now_poll and self.loop is not None and prober.active:
            prober.gen += 1            # its entry in the heap no longer counts
            self._schedule(prober, 0.0)

    def drain(self) -> None:
        """Read every reply already queued, at its kernel arrival time: before
        silence is judged (a busy loop reading late must not make it silence)."""
        for ch in self.channels.values():
            ch.drain()

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
        if prober.pace != 1:
            ms *= prober.pace
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
        heapq.heappush(self._heap, (at, next(self._tie), prober, prober.gen))
        self._send_timer.arm(self.loop, at)

    def _send_due(self) -> None:
        heap = self._heap
        # sends due within a tick go out together: one wake-up for many probes
        horizon = self.loop.time() + self.tick
        while heap and heap[0][0] <= horizon:
            _, _, prober, gen = heapq.heappop(heap)
            if not prober.active or gen != prober.gen:
                continue
            self._probe(prober)
            if not prober.finished:
                heapq.heappush(heap, (self.loop.time() + self._interval(prober),
                                      next(self._tie), prober, gen))
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


