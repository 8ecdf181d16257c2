"""argoctl's side of a `bench peers` row: its edge daemon as a process of its
own, as babeld and BIRD run, read from outside as an operator reads it.

Until 2026-12-04 the daemon was a thread of the bench process, sharing one
interpreter with the request client, the packet tap and the echo service; in
the TCG VM its probes then waited for the traffic and every path went down
about once a second with no fault (docs/peers.md). Now `EdgeDaemon` runs it as
`python -m argoctl.lab.processes daemon --apply` (`argoctl run`'s steps) in
edge's namespace, and the bench reads:
- the state file (argoctl/statefile.py): the choice and each path's standing
  (state, tier, flap penalty, hold-down), rewritten at each map write and at
  least every few seconds;
- the decision log (its JSON lines on stderr): every change of weights, with
  its reason, at the daemon's monotonic clock (the bench's: one machine).
`DecisionTrace` samples the state file and keeps each change of a path's
standing; `dump` writes them with the decisions as JSON lines, times in
seconds from the scenario's fault. `standing` is one snapshot: why the daemon
is not (yet) back on direct.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Optional

DEST = "origin"
# the first start compiles the datapath: ~13 s under TCG, minutes when loaded
START_TIMEOUT_S = 600.0


class EdgeDaemon:
    """argoctl's daemon on the lab's edge (`loop`: a LoopLab started without
    its own daemon), as its own process; `log_path`: its log."""

    def __init__(self, loop, log_path: str):
        from argoctl.lab.processes import DaemonProcess
        from argoctl.statefile import state_path
        edge = loop.topo["edge"]
        self.log_path = log_path
        self.state_file = state_path(loop.run_dir, edge.netns)
        self.proc = DaemonProcess(loop.configs["edge"].path, edge.netns, loop.run_dir,
                                  log_path, apply=True).wait_started(START_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM: it leaves its datapath in place, as `argoctl run` does (a
        restart adopts it)."""
        status = self.proc.stop()
        if status not in (0, None):
            raise RuntimeError(f"argoctl's edge daemon exited with {status}: "
                               f"{self.proc.log_tail(600)}")

    def doc(self) -> dict:
        """The state file's entry for DEST ({} while there is none)."""
        try:
            with open(self.state_file) as f:
                return json.load(f)["destinations"][DEST]
        except (OSError, ValueError, KeyError):
            return {}

    def routes_direct(self) -> bool:
        """Direct chosen and every path measured up (none in doubt)."""
        d = self.doc()
        paths = d.get("paths") or {}
        return d.get("choice") == "direct" and bool(paths) and \
            all(p.get("state") == "up" for p in paths.values())

    def decisions(self) -> list[dict]:
        """Every decision the daemon logged for DEST (a change of the weights written)."""
        return logged_decisions(self.log_path, DEST)


def logged_decisions(log_path: str, dest: str) -> list[dict]:
    """The decision records (daemon.Record.to_dict) for `dest` in a daemon's log."""
    out = []
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                i = line.find('{"event": "decision"')
                if i < 0:
                    continue
                try:
                    rec = json.loads(line[i:])
                except ValueError:      # a line still being written
                    continue
                if rec.get("dest") == dest:
                    out.append(rec)
    except OSError:
        pass
    return out


def _path(p: dict) -> dict:
    return {"state": p.get("state"), "tier": p.get("tier"), "penalty": round(p.get("penalty", 0)),
            "suppressed": bool(p.get("suppressed")), "held_s": p.get("held_for_s"),
            "replies": p.get("replies"), "timeouts": p.get("timeouts")}


def standing(edge: EdgeDaemon) -> dict:
    """The daemon's latest decision for DEST, as its state file has it: choice,
    reason, each path's standing."""
    d = edge.doc()
    if not d:
        return {}
    return {"choice": d.get("choice"), "reason": d.get("reason"),
            "paths": {p: _path(s) for p, s in (d.get("paths") or {}).items()}}


def returns_to_direct(edge: EdgeDaemon, since: float, until: float, most: int = 8) -> list:
    """The decisions that gave new flows back to direct in [since, until]
    (seconds after `since`, the reason): why it went back, if it did."""
    return [{"at_s": round(r["at"] - since, 2), "reason": r["reason"]}
            for r in edge.decisions()
            if since <= r["at"] <= until and r["choice"] == "direct"
            and r.get("previous") != "direct"][:most]


class DecisionTrace:
    """Every change of a path's standing (state, tier, suppression) in the
    daemon's state file, sampled every `every` s; `edge` may be replaced (a
    restart) while it runs."""
    KEY = ("state", "tier", "suppressed")

    def __init__(self, edge: EdgeDaemon, every: float = 0.1):
        self.edge, self.every = edge, every
        self.events: list[dict] = []
        self._halt = threading.Event()
        self._t = threading.Thread(target=self._loop, name="decision-trace", daemon=True)
        self._t.start()

    def _loop(self) -> None:
        seen: dict = {}
        last = None
        while not self._halt.wait(self.every):
            d = self.edge.doc()
            at = d.get("decided_at")
            if at is None or at == last:
                continue
            last = at
            at_mono = at - (time.time() - time.monotonic())    # wall -> monotonic
            for p, s in (d.get("paths") or {}).items():
                row = _path(s)
                key = tuple(row[k] for k in self.KEY)
                if seen.get(p) != key:
                    seen[p] = key
                    self.events.append({"at": at_mono, "path": p, **row})

    def stop(self) -> None:
        self._halt.set()
        self._t.join(2)

    def dump(self, filename: str, t0: float, since: float, until: float,
             head: Optional[dict] = None) -> int:
        """Path changes and decisions in [since, until] as JSON lines, `at` in
        seconds from t0, sorted; `head` (the row) first. Returns the count."""
        out = [{**e, "event": "path", "at": round(e["at"] - t0, 3)}
               for e in list(self.events) if since <= e["at"] <= until]
        out += [{"event": "decision", "at": round(r["at"] - t0, 3), "choice": r["choice"],
                 "previous": r.get("previous"), "reason": r["reason"], "weights": r["weights"]}
                for r in self.edge.decisions() if since <= r["at"] <= until]
        out.sort(key=lambda e: e["at"])
        with open(filename, "w") as f:
            if head is not None:
                f.write(json.dumps(head) + "\n")
            for e in out:
                f.write(json.dumps(e) + "\n")
        return len(out)
