"""Synthetic probe traces and a deterministic replay into the engine.

A trace is one RTT per probe round for one path: seconds, or None when the
probe got no reply. `series()` builds one from a mean, seeded noise, steps,
single spikes, random loss and outages (either direction: a round trip needs
both). `replay()` turns traces into time-ordered estimator events (replies at
sent + rtt, timeouts at sent + timeout) interleaved with engine.decide() calls,
and returns every decision, so tests (and the measurement-loop integration)
can assert on what the engine did and when.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

Trace = list  # list[Optional[float]]: rtt seconds per round, None = lost


def series(rounds: int, mean_ms: float, *, noise: float = 0.0, seed: int = 0,
           steps: Iterable[tuple[int, float]] = (), spikes: Iterable[tuple[int, float]] = (),
           loss: float = 0.0, outages: Iterable[tuple[int, int]] = (),
           forward_outages: Iterable[tuple[int, int]] = (),
           return_outages: Iterable[tuple[int, int]] = ()) -> Trace:
    """RTTs for `rounds` probes.

    noise: uniform +- fraction of the (stepped) mean. steps: (from_round,
    delta_ms), lasting. spikes: (round, delta_ms), that round only. loss:
    random probability a round is lost. outages / forward_outages /
    return_outages: [start, end) rounds with no reply."""
    rng = random.Random(seed)
    steps = sorted(steps)
    spikes = dict(spikes)
    dead = _rounds(outages) | _rounds(forward_outages) | _rounds(return_outages)
    out: Trace = []
    for i in range(rounds):
        m = mean_ms + sum(d for start, d in steps if i >= start)
        r = m * (1 + rng.uniform(-noise, noise)) if noise else m
        r += spikes.get(i, 0.0)
        lost = rng.random() < loss if loss else False
        out.append(None if (lost or i in dead) else max(0.0, r) / 1000.0)
    return out


def delivered(rounds: int, forward_outages: Iterable[tuple[int, int]] = ()) -> int:
    """How many probes reached the far end (what a responder would count)."""
    return rounds - len(_rounds(forward_outages) & set(range(rounds)))


def _rounds(spans: Iterable[tuple[int, int]]) -> set[int]:
    return {i for a, b in spans for i in range(a, b)}


@dataclass(frozen=True)
class Step:
    now: float
    decision: object   # engine.Decision


def replay(engine, dest: str, traces: dict[str, Trace], *, t0: float = 0.0,
           interval: Optional[float] = None, timeout: Optional[float] = None,
           decide_every: Optional[float] = None,
           extra: Sequence[tuple[float, Callable[[float], None]]] = ()) -> list[Step]:
    """Feed `traces` (round i sent at t0 + i*interval) into engine.path(dest, p)
    and call engine.decide_one(dest, now) every `decide_every` seconds (default:
    the probe interval, half an interval after each send). `extra`: (time,
    fn(now)) events, e.g. passive signals. Events at the same time run before
    the decision. Returns the decisions in order."""
    pol = engine.policy
    interval = pol.probe_interval_ms / 1000.0 if interval is None else interval
    timeout = pol.probe_timeout_ms / 1000.0 if timeout is None else timeout
    decide_every = interval if decide_every is None else decide_every
    rounds = max(len(t) for t in traces.values())
    events: list = []   # (time, kind 0=measurement 1=decide, tiebreak, fn)
    n = 0
    for path, trace in traces.items():
        est = engine.path(dest, path)
        for i, rtt in enumerate(trace):
            sent = t0 + i * interval
            if rtt is None:
                fn = (lambda now, e=est, s=i: e.on_timeout(s, now))
                events.append((sent + timeout, 0, n, fn))
            else:
                fn = (lambda now, e=est, s=i, st=sent, r=rtt: e.on_reply(s, st, r, now))
                events.append((sent + rtt, 0, n, fn))
            n += 1
    for at, fn in extra:
        events.append((at, 0, n, fn))
        n += 1
    end = t0 + rounds * interval
    k = 0
    while True:
        at = t0 + interval / 2 + k * decide_every
        if at > end:
            break
        events.append((at, 1, n + k, None))
        k += 1
    heapq.heapify(events)
    steps: list[Step] = []
    while events:
        at, kind, _, fn = heapq.heappop(events)
        if kind == 0:
            fn(at)
        else:
            steps.append(Step(at, engine.decide_one(dest, at)))
    return steps


def choices(steps: Sequence[Step]) -> list[str]:
    return [s.decision.choice for s in steps]


def switches(steps: Sequence[Step]) -> list[tuple[float, str, str]]:
    """(time, from, to) for every change of choice."""
    out = []
    for a, b in zip(steps, steps[1:]):
        if a.decision.choice != b.decision.choice:
            out.append((b.now, a.decision.choice, b.decision.choice))
    return out


def first_time(steps: Sequence[Step], pred: Callable[[object], bool],
               after: float = float("-inf")) -> Optional[float]:
    """Time of the first decision after `after` satisfying pred(decision)."""
    for s in steps:
        if s.now >= after and pred(s.decision):
            return s.now
    return None
