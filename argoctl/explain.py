"""`argoctl explain DEST` and the live-choices part of `argoctl status`, both
read from the state file `argoctl run` keeps (daemon.py)."""

from __future__ import annotations

import time
from typing import Optional

from argoctl import daemon


def path(run_dir: Optional[str] = None, ns: Optional[str] = None) -> str:
    from argoctl.apply import default_run_dir
    return daemon.state_path(run_dir or default_run_dir(), ns)


def load(run_dir: Optional[str] = None, ns: Optional[str] = None) -> dict:
    """The daemon's state file, with "stale" set when its writer is gone.
    FileNotFoundError if none; RunFileError (naming the file) if damaged."""
    doc = daemon.read_state(path(run_dir, ns))
    doc["stale"] = not (doc.get("running") and daemon.pid_alive(doc.get("pid")))
    return doc


def live_choices(run_dir: Optional[str] = None, ns: Optional[str] = None) -> Optional[dict]:
    """{dest: {choice, reason, since, paths: {path: state}}} and whether the daemon
    runs, or None when no daemon ever ran here. For `argoctl status`. A damaged
    file (or another version's) raises RunFileError: never a silent omission."""
    try:
        doc = load(run_dir, ns)
    except FileNotFoundError:   # never ran here
        return None
    return {"running": not doc["stale"], "updated": doc["updated"],
            "destinations": {name: {"choice": d["choice"], "reason": d["reason"],
                                    "since": d.get("since"),
                                    "paths": {p: v["state"] for p, v in d["paths"].items()}}
                             for name, d in doc["destinations"].items()}}


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def text(doc: dict, dest: str) -> str:
    """The scores and the reason for DEST's current choice, as plain lines."""
    d = doc["destinations"].get(dest)
    if d is None:
        known = ", ".join(sorted(doc["destinations"])) or "none"
        raise KeyError(f"no destination {dest!r} (known: {known})")
    age = time.time() - doc["updated"]
    head = [f"{dest}: {d['choice']}",
            f"  reason: {d['reason']}"]
    if d.get("since"):
        head.append(f"  chosen for {time.time() - d['since']:.1f} s, "
                    f"{d.get('switches', 0)} switch(es) since start")
    if doc.get("stale"):
        head.append(f"  (daemon not running: last written {age:.0f} s ago; the datapath "
                    "keeps these choices)")
    rows = [f"  {'path':<14} {'state':<8} {'tier':<8} {'score':>8} {'raw':>8} {'rtt':>8} "
            f"{'jitter':>7} {'loss':>5} {'weight':>6}  notes"]
    for name, p in d["paths"].items():
        notes = []
        if not p["up"]:
            notes.append("marked down")
        if p.get("held_for_s") is not None:
            notes.append(f"held {p['held_for_s']:.1f}s more")
        if p.get("penalty", 0) >= 1:
            notes.append(f"flap penalty {p['penalty']:.0f}" + (" suppressed" if p["suppressed"]
                                                               else ""))
        rows.append(f"  {name:<14} {p['state']:<8} {p['tier']:<8} {_ms(p['score_ms']):>8} "
                    f"{_ms(p['raw_ms']):>8} {_ms(p['rtt_ms']):>8} {_ms(p['jitter_ms']):>7} "
                    f"{p['loss']:>5.0%} {p['weight']:>6}  {', '.join(notes)}")
    return "\n".join(head + (rows if d["paths"] else ["  no measurements yet"]))


def render_choices(choices: dict, console=None) -> None:
    """The live-choices table for `argoctl status`."""
    from rich.console import Console
    from rich.table import Table
    console = console or Console()
    title = "live choices" + ("" if choices["running"] else " (daemon not running: last known)")
    t = Table(title=title)
    for col in ("destination", "path", "paths", "reason"):
        t.add_column(col)
    for name, d in sorted(choices["destinations"].items()):
        states = " ".join(f"{p}:{s}" for p, s in d["paths"].items())
        t.add_row(name, d["choice"], states, d["reason"])
    console.print(t)
