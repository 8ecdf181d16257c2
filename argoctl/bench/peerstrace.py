"""argoctl's side of a `bench peers` row, traced back to its daemon's decisions.

The bench reads which path each request took from packets; this reads *why*:
a thread samples the edge daemon's latest decision for one destination and keeps
every change of a path's standing (estimator state, tier, flap penalty,
hold-down, charged and excused downs, age of its last reply), and `dump` writes
them with the daemon's decision records (each change of weights, with its
reason) as JSON lines, times in seconds from the scenario's fault. `standing`
is one snapshot: why the daemon is not (yet) back on direct.
"""

from __future__ import annotations

import json
import threading
from typing import Optional


def _path(s, now: float) -> dict:
    c = s.snapshot.counts
    last = s.snapshot.last_reply
    return {"state": getattr(s.state, "value", str(s.state)), "tier": s.tier_name,
            "penalty": round(s.penalty), "suppressed": bool(s.suppressed),
            "held_s": None if s.held_until is None else round(s.held_until - now, 1),
            "downs": c.get("downs", 0), "excused": c.get("excused", 0),
            "silent_ms": None if last is None else round(1000 * (now - last))}


def standing(daemon, dest: str = "origin") -> dict:
    """The daemon's latest decision for dest: choice, reason, each path's standing."""
    dec = daemon.engine.last(dest)
    if dec is None:
        return {}
    return {"choice": dec.choice, "reason": dec.reason,
            "paths": {p: _path(s, dec.at) for p, s in dec.scores.items()}}


class DecisionTrace:
    """Every change of a path's standing (not its score) in the daemon's
    decisions for `dest`, sampled every `every` s (decisions come every probe
    interval and at detection deadlines; a sample sees the latest)."""
    KEY = ("state", "tier", "suppressed", "downs", "excused")

    def __init__(self, daemon, dest: str = "origin", every: float = 0.02):
        self.daemon, self.dest, self.every = daemon, dest, every
        self.events: list[dict] = []
        self._halt = threading.Event()
        self._t = threading.Thread(target=self._loop, name="decision-trace", daemon=True)
        self._t.start()

    def _loop(self) -> None:
        seen, last = {}, None
        while not self._halt.wait(self.every):
            try:
                dec = self.daemon.engine.last(self.dest)
            except Exception:           # not deciding yet
                continue
            if dec is None or dec is last:
                continue
            last = dec
            for p, s in dec.scores.items():
                d = _path(s, dec.at)
                key = tuple(d[k] for k in self.KEY)
                if seen.get(p) != key:
                    seen[p] = key
                    self.events.append({"at": dec.at, "path": p, **d})

    def stop(self) -> None:
        self._halt.set()
        self._t.join(2)

    def dump(self, filename: str, t0: float, since: float, until: float,
             head: Optional[dict] = None) -> int:
        """Path changes and decision records in [since, until] as JSON lines,
        `at` in seconds from t0, sorted; `head` (the row) first. Returns the count."""
        out = [{**e, "event": "path", "at": round(e["at"] - t0, 3)}
               for e in list(self.events) if since <= e["at"] <= until]
        out += [{"event": "decision", "at": round(r.at - t0, 3), "choice": r.choice,
                 "previous": r.previous, "reason": r.reason, "tiers": r.tiers,
                 "weights": {p: w for p, (w, up) in r.weights.items()}}
                for r in list(self.daemon.history) if since <= r.at <= until]
        out.sort(key=lambda e: e["at"])
        with open(filename, "w") as f:
            if head is not None:
                f.write(json.dumps(head) + "\n")
            for e in out:
                f.write(json.dumps(e) + "\n")
        return len(out)
