"""The files under /run/argoctl (and each namespace's state directory): written
atomically through one helper, read with an error that names the file.

Every writer (state.json, routing.json, saved-sysctls.json, intent.json, the
instance lock argoctl.pid) goes through `write_atomic`: the text goes to a
temporary file in the same directory, is fsync'd, renamed over the old file,
and the directory is fsync'd. A reader, or a host that loses power, sees the
old file or the new one, never half of one.

A file can still be damaged (an editor, a bad copy, a disk that lied).
Reading one never gives a traceback: `read_json` raises RunFileError naming
the file and what is wrong, and each caller says what it does instead
(docs/daemon.md, "Run files"). This module also holds the two files `up`
keeps for `down`: the sysctl values from before argoctl, and the ranges of
the last `up`.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from typing import Callable, Optional

from argoctl import names
from argoctl.config import Routing

DEVICES = "devices:"     # saved-sysctls key prefix: per-device values under a global knob
ACCEPT_RA = "accept_ra:"  # saved-sysctls key prefix: accept_ra values raised to 2 for forwarding


class RunFileError(ValueError):
    """A run file exists but cannot be used: `path`, and `problem` in words."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


def write_atomic(path: str, text: str, mode: int = 0o644, lock: bool = False) -> Optional[int]:
    """Replace `path` with `text`: temp file, fsync, rename, fsync of the directory.
    lock=True: the new file is flocked (exclusive) before it replaces the old one
    and its descriptor is returned open (the instance lock, home.InstanceLock)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        os.set_inheritable(fd, False)
        if lock:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # nobody else knows this file yet
        data = text.encode()
        while data:
            data = data[os.write(fd, data):]
        os.fchmod(fd, mode)
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    if lock:
        return fd
    os.close(fd)
    return None


def write_json(path: str, doc) -> None:
    write_atomic(path, json.dumps(doc, sort_keys=True, separators=(",", ":")))


def read_json(path: str, check: Optional[Callable[[object], Optional[str]]] = None):
    """The JSON document in `path`. FileNotFoundError passes through (no file is
    not a damaged file); anything else wrong raises RunFileError. `check(doc)`
    returns a problem in words, or None if the document has the right shape."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except IsADirectoryError:
        raise RunFileError(path, "is a directory, not a file") from None
    except PermissionError:
        raise RunFileError(path, "permission denied") from None
    if not raw.strip():
        raise RunFileError(path, "empty (truncated?)")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RunFileError(path, "not UTF-8 text (garbled?)") from None
    except json.JSONDecodeError as e:
        raise RunFileError(path, f"not valid JSON (truncated or garbled?): {e.msg} "
                                 f"at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise RunFileError(path, "not valid JSON (nested too deeply)") from None
    if check is not None:
        problem = check(doc)
        if problem:
            raise RunFileError(path, problem)
    return doc


def remove(path: str) -> bool:
    """Delete a run file if present (damaged or not). True if one was removed."""
    try:
        os.unlink(path)
        return True
    except (FileNotFoundError, IsADirectoryError):
        return False


def _type_ok(v, types: tuple) -> bool:
    # (bool is an int to Python, never to a reader of these files)
    return isinstance(v, types) and (bool in types or not isinstance(v, bool))


def shape(doc, want: dict[str, tuple], optional: dict[str, tuple] = {}) -> Optional[str]:
    """A problem if `doc` is not an object holding `want`'s keys with those types
    (and `optional`'s, where present)."""
    if not isinstance(doc, dict):
        return f"expected a JSON object, found {type(doc).__name__}"
    for key, types in want.items():
        if key not in doc:
            return f"field {key!r} missing"
    for key, types in {**want, **optional}.items():
        if key in doc and not _type_ok(doc[key], types):
            return f"field {key!r} has the wrong type ({type(doc[key]).__name__})"
    return None


# -- the two files of `up`: saved sysctls and the ranges of the last up ------------

def _check_saved(doc) -> Optional[str]:
    if not isinstance(doc, dict):
        return f"expected a JSON object, found {type(doc).__name__}"
    for k, v in doc.items():
        if k.startswith((DEVICES, ACCEPT_RA)):
            ok = isinstance(v, dict) and all(isinstance(a, str) and isinstance(b, str)
                                             for a, b in v.items())
        else:
            ok = isinstance(v, (str, type(None)))
        if not ok:
            return f"entry {k!r} has the wrong type"
    return None


class Saved:
    """Prior values of global sysctls argoctl changed, persisted so `down` can restore them.

    A damaged file is not fatal: its values are unknown, so `load` answers {} and
    records a warning saying so; the next `store` replaces it (with the values of
    now: `down` then leaves forwarding as it finds it)."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, names.SAVED_SYSCTLS_FILE)
        self.warnings: list[str] = []

    def load(self) -> dict:
        try:
            return read_json(self.path, _check_saved)
        except FileNotFoundError:
            return {}
        except RunFileError as e:
            msg = (f"{e}: the sysctl values from before argoctl are unknown; going on "
                   "without them (down leaves forwarding as it finds it)")
            if msg not in self.warnings:
                self.warnings.append(msg)
            return {}

    def store(self, values: dict) -> None:
        if not values:
            remove(self.path)
            return
        write_json(self.path, values)


_ROUTING_KEYS = ("table_base", "rule_priority_base", "fwmark_mask")


def save_routing(directory: str, routing: Routing) -> None:
    """Remember the ranges of the last `up`, so `down` without a config finds our objects."""
    write_json(os.path.join(directory, names.ROUTING_FILE),
               {k: getattr(routing, k) for k in _ROUTING_KEYS})


def _check_routing(doc) -> Optional[str]:
    problem = shape(doc, {k: (int,) for k in _ROUTING_KEYS})
    if problem:
        return problem
    if not (1 <= doc["table_base"] < 2**32 and 1 <= doc["rule_priority_base"] < 2**32
            and 0 < doc["fwmark_mask"] < 2**32):
        return "values out of range"
    run = doc["fwmark_mask"] >> names.mark_shift(doc["fwmark_mask"])
    if run & (run + 1):
        return "fwmark_mask is not one contiguous run of bits"
    return None


def load_routing(directory: str) -> Routing:
    """The ranges of the last `up` (defaults if none). RunFileError if damaged."""
    try:
        doc = read_json(os.path.join(directory, names.ROUTING_FILE), _check_routing)
    except FileNotFoundError:
        return Routing()
    return Routing(**{k: doc[k] for k in _ROUTING_KEYS})


def load_routing_or_default(directory: str, warnings: list[str]) -> Routing:
    """load_routing, falling back to the defaults (with a warning) if the file is damaged."""
    try:
        return load_routing(directory)
    except RunFileError as e:
        d = Routing()
        warnings.append(f"{e}: using the default ranges (tables {d.table_base}+, priorities "
                        f"{d.rule_priority_base}+, mask {d.fwmark_mask:#x}); pass -c FILE "
                        "if the last `up` used others")
        return d
