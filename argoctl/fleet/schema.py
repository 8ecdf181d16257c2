"""The fleet bus's values (docs/fleet.md "Bus schema"): building them, and reading
them back without trusting them.

Every value a reader takes from the bus goes through `parse`, which either
returns a checked record or raises Rejected with one of REASONS; the reader
counts the reason and ignores the value. Nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Optional

VERSION = 1
REASONS = ("schema", "absurd", "stale", "impostor", "mismatch")
STATES = ("up", "suspect", "down", "unknown")
MAX_MS = 60000.0
MAX_CLOCK_SKEW_S = 5.0
LEGS_PER_MESSAGE = 200
_HOST = re.compile(r"[a-z0-9][a-z0-9-]{0,11}\Z")
_DEST = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")


class Rejected(Exception):
    """A bus value that is ignored; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Leg:
    """One measured leg: a host's direct path to a destination, or its tunnel to
    a peer. `at` is when it was measured (writer's wall clock, s)."""
    state: str
    rtt_ms: Optional[float]
    jitter_ms: float
    loss: float
    at: float
    probe: Optional[str] = None         # direct legs: "kind:target:port"
    syn: tuple[int, int] = (0, 0)       # direct legs: SYNs sent, SYN-ACKs since last write

    @property
    def up(self) -> bool:
        return self.state == "up"


@dataclass(frozen=True, slots=True)
class Member:
    host: str
    at: float
    seq: int
    version: str
    role: str
    started: float
    underlay: tuple[str, ...]
    tunnel_address: Optional[str]
    wg_public_key: Optional[str]
    peers: tuple[str, ...]
    destinations: int
    interval_ms: int


def probe_id(probe) -> Optional[str]:
    """A config Probe as the bus names it: "kind:target:port" (None: no probe)."""
    if probe is None:
        return None
    return f"{probe.kind}:{probe.target}:{probe.port or 0}"


def shard_count(n_dests: int, per_message: int = LEGS_PER_MESSAGE) -> int:
    """Shards for n destinations: a power of two, at most per_message legs each
    on average."""
    s = 1
    while s * per_message < n_dests:
        s *= 2
    return s


def shard_of(dest: str, shards: int) -> int:
    return zlib.crc32(dest.encode()) % shards


def dumps(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


# -- building ------------------------------------------------------------------------

def leg_doc(leg: Leg, now: float) -> dict:
    d = {"state": leg.state, "rtt_ms": None if leg.rtt_ms is None else round(leg.rtt_ms, 3),
         "jitter_ms": round(leg.jitter_ms, 3), "loss": round(leg.loss, 4),
         "age_ms": max(0, int((now - leg.at) * 1000))}
    if leg.probe is not None:
        d["probe"] = leg.probe
        d["syn"] = [int(leg.syn[0]), int(leg.syn[1])]
    return d


def direct_value(host: str, shard: int, shards: int, legs: dict[str, Leg], now: float) -> bytes:
    return dumps({"v": VERSION, "host": host, "at": round(now, 3), "shard": shard,
                  "shards": shards, "legs": {d: leg_doc(l, now) for d, l in legs.items()}})


def tunnel_value(host: str, legs: dict[str, Leg], now: float) -> bytes:
    return dumps({"v": VERSION, "host": host, "at": round(now, 3),
                  "legs": {p: leg_doc(l, now) for p, l in legs.items()}})


def member_value(m: Member) -> bytes:
    return dumps({"v": VERSION, "host": m.host, "at": round(m.at, 3), "seq": m.seq,
                  "version": m.version, "role": m.role, "started": round(m.started, 3),
                  "underlay": list(m.underlay), "tunnel_address": m.tunnel_address,
                  "wg_public_key": m.wg_public_key, "peers": list(m.peers),
                  "destinations": m.destinations, "interval_ms": m.interval_ms})


# -- reading ---------------------------------------------------------------------------

def _get(doc: dict, key: str, types, what: str = "schema"):
    if key not in doc:
        raise Rejected("schema", f"missing {key!r}")
    v = doc[key]
    if not isinstance(v, types) or isinstance(v, bool) and bool not in _tuple(types):
        raise Rejected(what, f"{key!r} has type {type(v).__name__}")
    return v


def _tuple(t) -> tuple:
    return t if isinstance(t, tuple) else (t,)


def _num(doc: dict, key: str, lo: float, hi: float, nullable: bool = False) -> Optional[float]:
    v = doc.get(key, None) if nullable else _get(doc, key, (int, float))
    if v is None:
        if nullable and key in doc:
            return None
        raise Rejected("schema", f"missing {key!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Rejected("schema", f"{key!r} is not a number")
    if not math.isfinite(v) or not lo <= v <= hi:
        raise Rejected("absurd", f"{key!r} = {v!r} outside {lo}..{hi}")
    return float(v)


def _envelope(raw: bytes, key_host: str, now: float, ttl_s: float) -> tuple[dict, float]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Rejected("schema", "not JSON") from None
    if not isinstance(doc, dict):
        raise Rejected("schema", "not an object")
    if doc.get("v") != VERSION:
        raise Rejected("schema", f"version {doc.get('v')!r}")
    host = _get(doc, "host", str)
    if not _HOST.match(host):
        raise Rejected("absurd", f"host name {host!r}")
    if host != key_host:
        raise Rejected("impostor", f"{host!r} wrote under {key_host!r}'s key")
    at = _num(doc, "at", 0, 1e11)
    if at < now - ttl_s:
        raise Rejected("stale", f"written {now - at:.1f}s ago (ttl {ttl_s:g}s)")
    if at > now + MAX_CLOCK_SKEW_S:
        raise Rejected("stale", f"written {at - now:.1f}s in the future")
    return doc, at


def _leg(d, at: float, ttl_s: float, direct: bool) -> Leg:
    if not isinstance(d, dict):
        raise Rejected("schema", "a leg is not an object")
    state = _get(d, "state", str)
    if state not in STATES:
        raise Rejected("absurd", f"state {state!r}")
    rtt = _num(d, "rtt_ms", 0, MAX_MS, nullable=True)
    jitter = _num(d, "jitter_ms", 0, MAX_MS)
    loss = _num(d, "loss", 0, 1)
    age = _num(d, "age_ms", 0, ttl_s * 1000)
    probe, syn = None, (0, 0)
    if direct:
        probe = _get(d, "probe", str)
        s = _get(d, "syn", list)
        if len(s) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in s):
            raise Rejected("schema", "syn is not [sent, acked]")
        if min(s) < 0 or s[0] > 1e9 or s[1] > s[0] + 1000:
            raise Rejected("absurd", f"syn {s}")
        syn = (s[0], s[1])
    if state == "up" and rtt is None:
        raise Rejected("absurd", "up without an RTT")
    return Leg(state, rtt, jitter, loss, at - age / 1000.0, probe, syn)


def parse_legs_key(key: str) -> tuple[str, str, Optional[int]]:
    """`<host>.d.<shard>` -> (host, "d", shard); `<host>.t` -> (host, "t", None)."""
    parts = key.split(".")
    if len(parts) == 3 and parts[1] == "d" and parts[2].isdigit() and _HOST.match(parts[0]):
        return parts[0], "d", int(parts[2])
    if len(parts) == 2 and parts[1] == "t" and _HOST.match(parts[0]):
        return parts[0], "t", None
    raise Rejected("schema", f"key {key!r}")


def parse_legs(key: str, raw: bytes, now: float, ttl_s: float
               ) -> tuple[str, str, Optional[int], dict[str, Leg], int]:
    """A legs value -> (host, "d"|"t", shard, {dest or peer: Leg}, legs rejected).
    A leg that fails its checks is dropped alone (counted by the caller through
    the returned number and Rejected reasons in `bad`)."""
    host, kind, shard = parse_legs_key(key)
    doc, at = _envelope(raw, host, now, ttl_s)
    legs = _get(doc, "legs", dict)
    if kind == "d":
        shards = _get(doc, "shards", int)
        if _get(doc, "shard", int) != shard or not 1 <= shards <= 1 << 20 or shard >= shards:
            raise Rejected("schema", f"shard {doc.get('shard')!r} of {shards!r} under {key!r}")
    out, bad = {}, []
    for name, d in legs.items():
        if not isinstance(name, str) or not (_DEST if kind == "d" else _HOST).match(name):
            bad.append(Rejected("absurd", f"leg name {name!r}"))
            continue
        try:
            out[name] = _leg(d, at, ttl_s, kind == "d")
        except Rejected as e:
            bad.append(e)
    return host, kind, shard, out, bad


def parse_member(key: str, raw: bytes, now: float, ttl_s: float) -> Member:
    if not _HOST.match(key):
        raise Rejected("schema", f"key {key!r}")
    doc, at = _envelope(raw, key, now, ttl_s)
    role = _get(doc, "role", str)
    if role not in ("edge", "relay"):
        raise Rejected("absurd", f"role {role!r}")
    underlay = _get(doc, "underlay", list)
    peers = _get(doc, "peers", list)
    if not all(isinstance(a, str) and len(a) <= 64 for a in underlay):
        raise Rejected("schema", "underlay")
    if not all(isinstance(p, str) and _HOST.match(p) for p in peers):
        raise Rejected("schema", "peers")
    ta = doc.get("tunnel_address")
    wg = doc.get("wg_public_key")
    if ta is not None and not isinstance(ta, str) or wg is not None and not isinstance(wg, str):
        raise Rejected("schema", "tunnel_address / wg_public_key")
    return Member(key, at, int(_num(doc, "seq", 0, 1e15)), _get(doc, "version", str)[:32], role,
                  _num(doc, "started", 0, 1e11), tuple(underlay), ta, wg, tuple(peers),
                  int(_num(doc, "destinations", 0, 1e9)),
                  int(_num(doc, "interval_ms", 1, 3600000)))
