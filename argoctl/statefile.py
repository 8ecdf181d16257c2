"""The daemon's files under /run/argoctl: state.json (written whole, as text built
directly) and the instance lock."""

from __future__ import annotations

import json
import logging
import os
from typing import Optional

from argoctl import names, netlink, runfiles
from argoctl.home import LOCK_FILE, InstanceLock, Refused  # noqa: F401  (re-exported)
from argoctl.engine import TIER_NAMES, Decision
from argoctl.estimator import State

log = logging.getLogger("argoctl.daemon")

STATE_FILE = names.STATE_FILE
STATE_VERSION = 1


# A start-up failure with a message for the user (nothing was left half-done);
# the same class as a refused lock (home.Refused), so callers catch one.
DaemonError = Refused


def state_path(run_dir: str, ns: Optional[str] = None) -> str:
    return os.path.join(netlink.state_dir(ns, run_dir), STATE_FILE)


def _r(v: Optional[float], nd: int = 3) -> Optional[float]:
    return None if v is None else round(v, nd)


def _path_doc(s, w: int, up: bool, at: float) -> dict:
    snap = s.snapshot
    return {
        "state": s.state.value, "tier": s.tier_name, "weight": w, "up": up,
        "score_ms": _r(s.smoothed_ms), "raw_ms": _r(s.raw_ms),
        "rtt_ms": _r(snap.srtt_ms), "jitter_ms": _r(snap.jitter_ms),
        "loss": _r(snap.loss, 4), "penalty": round(s.penalty, 1),
        "suppressed": s.suppressed,
        "held_for_s": None if s.held_until is None else _r(s.held_until - at, 2),
        "replies": snap.counts.get("replies", 0), "timeouts": snap.counts.get("timeouts", 0),
    }


def decision_doc(dec: Decision, wall_offset: float, since: Optional[float]) -> dict:
    """One destination's live choice, JSON-ready (times as Unix seconds)."""
    paths = {}
    for name, s in dec.scores.items():
        w, up = dec.weights[name]
        paths[name] = _path_doc(s, w, up, dec.at)
    return {"choice": dec.choice, "reason": dec.reason, "decided_at": _r(dec.at + wall_offset),
            "since": _r(None if since is None else since + wall_offset), "paths": paths}


# The state file's text, written directly: the daemon rewrites it every few
# seconds for every (destination, path), and building the dicts above and
# encoding them cost several times more. It is byte for byte what json.dumps
# (sort_keys, compact) makes of state_doc() (tests/unit/test_state_file.py):
# keys in sorted order, floats as repr() (as the json encoder writes them),
# strings through the json module's own encoder.
_JSTR = json.encoder.encode_basestring_ascii
_JBOOL = ("false", "true")
_PATH_JSON = ('{"held_for_s":%s,"jitter_ms":%r,"loss":%r,"penalty":%r,"raw_ms":%s,'
              '"replies":%r,"rtt_ms":%s,"score_ms":%s,"state":"%s","suppressed":%s,'
              '"tier":"%s","timeouts":%r,"up":%s,"weight":%r}')
_STATE_TEXT = {st: st.value for st in State}


def _json(v) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _path_json(s, w: int, up: bool, at: float) -> str:
    """_path_doc(...) as JSON text."""
    snap = s.snapshot
    counts = snap.counts
    raw, score, rtt, held = s.raw_ms, s.smoothed_ms, snap.srtt_ms, s.held_until
    loss, penalty = snap.loss, s.penalty
    text = _PATH_JSON % (
        "null" if held is None else repr(round(held - at, 2)),
        # (no loss, no penalty: the usual case, and round() would return them as they are)
        round(snap.jitter_ms, 3), round(loss, 4) if loss else loss,
        round(penalty, 1) if penalty else penalty,
        "null" if raw is None else repr(round(raw, 3)), counts.get("replies", 0),
        "null" if rtt is None else repr(round(rtt, 3)),
        "null" if score is None else repr(round(score, 3)),
        _STATE_TEXT[s.state], _JBOOL[s.suppressed], TIER_NAMES[s.tier],
        counts.get("timeouts", 0), _JBOOL[up], w)
    if "inf" in text or "nan" in text or w.__class__ is not int or up.__class__ is not bool:
        # (repr differs from JSON there; never from finite measurements)
        return _json(_path_doc(s, w, up, at))
    return text


def _written_json(weights: dict[str, tuple[int, bool]], jpaths: dict[str, str]) -> str:
    """{path: [weight, up]} as JSON text (jpaths: path -> its JSON string)."""
    parts = []
    for p in sorted(weights):
        w, up = weights[p]
        j = jpaths.get(p)
        if j is None or w.__class__ is not int or up.__class__ is not bool:
            return _json({p: [w, up] for p, (w, up) in weights.items()})
        parts.append("%s:[%r,%s]" % (j, w, _JBOOL[up]))
    return "{%s}" % ",".join(parts)


def write_state(path: str, doc: dict) -> None:
    """Atomically replace the state file: readers see the old or the new one."""
    write_state_text(path, json.dumps(doc, sort_keys=True, separators=(",", ":")))  # C encoder


def write_state_text(path: str, text: str) -> None:
    """write_state of a document already encoded (temp file, fsync, rename)."""
    runfiles.write_atomic(path, text)


_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_DEST_FIELDS = {"choice": (str,), "reason": (str,), "paths": (dict,)}
_DEST_OPTIONAL = {"since": _OPT_NUM, "decided_at": _OPT_NUM, "switches": (int,)}
_PATH_FIELDS = {"state": (str,), "tier": (str,), "weight": (int,), "up": (bool,),
                "score_ms": _OPT_NUM, "raw_ms": _OPT_NUM, "rtt_ms": _OPT_NUM,
                "jitter_ms": _NUM, "loss": _NUM, "penalty": _NUM, "suppressed": (bool,)}
_PATH_OPTIONAL = {"held_for_s": _OPT_NUM}


def _check_state(doc) -> Optional[str]:
    """What readers (status, explain, fleet status, the lab) need of a state
    file, or the problem in words."""
    problem = runfiles.shape(doc, {"version": (int,)})
    if problem:
        return problem
    if doc["version"] != STATE_VERSION:
        return f"state file version {doc['version']!r}, expected {STATE_VERSION}"
    problem = runfiles.shape(doc, {"running": (bool,), "updated": _NUM, "destinations": (dict,)},
                             {"pid": (int, type(None)), "node": (str,), "fleet": (dict,)})
    if problem:
        return problem
    for name, d in doc["destinations"].items():
        problem = runfiles.shape(d, _DEST_FIELDS, _DEST_OPTIONAL)
        if problem:
            return f"destination {name!r}: {problem}"
        for pname, p in d["paths"].items():
            problem = runfiles.shape(p, _PATH_FIELDS, _PATH_OPTIONAL)
            if problem:
                return f"destination {name!r} path {pname!r}: {problem}"
    return None


def read_state(path: str) -> dict:
    """The state file; FileNotFoundError if no daemon has written one, RunFileError
    (a ValueError naming the file) if it is damaged or of another version."""
    return runfiles.read_json(path, _check_state)


def pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- single instance ---------------------------------------------------------------

# -- the daemon --------------------------------------------------------------------
