"""What a valid config is: limits, key lists, per-field rules, message helpers."""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from typing import Any, Optional

from argoctl import names

from argoctl.config.model import *  # noqa: F401, F403
from argoctl.config.model import IPNetwork, Problem

# ---------------------------------------------------------------------------
# Validation. One pass over the tomllib document collects every problem; the
# model is returned only when there is none. Paths like ("peer", 1, "address")
# name a value both for messages and for the line locator.

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
MAX_DESTINATION_NAME = 63
MAX_PATHS = 8                     # pathset entries per destination in the datapath
# The datapath's map sizes (datapath.Sizes, bpf/include/consts.h): destination
# ids 1..MAX_DESTS-1, and the LPM tries' capacities.
MAX_DESTINATIONS = 131072 - 1
MAX_PREFIXES_V4 = 1048576
MAX_PREFIXES_V6 = 262144
MAX_WEIGHT = 65535
MTU_RANGE = (1280, 65535)         # 1280: the IPv6 minimum, so both families fit
PORT_RANGE = (1, 65535)
GRE_KEY_RANGE = (0, 2**32 - 1)
MAX_TABLE = 2**32 - 1
MAIN_RULE_PRIORITY = 32766        # the kernel's default "from all lookup main"
TUNNEL_KINDS = ("gre", "wireguard")
PROBE_KINDS = ("udp", "icmp", "tcp")

_TABLES = {"node": "table", "peer": "array", "destination": "array",
           "routing": "table", "policy": "table", "fleet": "table"}
_NODE_KEYS = ("name", "address", "tunnel_address", "steer_interfaces",
              "private_key_file", "relay")
_PEER_KEYS = ("name", "id", "address", "tunnel", "tunnel_address", "gre_key", "mtu",
              "public_key", "port", "listen_port")
_WG_KEYS = ("public_key", "port", "listen_port")
_DEST_KEYS = ("name", "prefixes", "paths", "weights", "probe")
_PROBE_KEYS = ("kind", "target", "port")

# Policy: kind, lower bound, upper bound, lower bound exclusive. Every field of
# Policy must be here (a unit test holds this in step with the dataclass).
_POLICY_RULES: dict[str, tuple] = {
    "probe_interval_ms": ("int", 10, 3_600_000, False),
    "probe_jitter": ("float", 0.0, 0.5, False),
    "probe_timeout_ms": ("int", 1, 3_600_000, False),
    "detect_multiplier": ("int", 1, 255, False),
    "recover_probes": ("int", 1, 1000, False),
    "hold_down_s": ("float", 0.0, 86400.0, False),
    "switch_relative": ("float", 0.0, 1.0, False),
    "switch_absolute_ms": ("float", 0.0, 60000.0, False),
    "loss_window": ("int", 1, 1000, False),
    "rtt_alpha": ("float", 0.0, 1.0, True),
    "split": ("bool",),
    "reroute": ("bool",),
    "responder_key_file": ("str",),
    "metrics_listen": ("str",),
}

# [fleet]: kind, and for numbers lower and upper bound (docs/config.md). Every
# field of Fleet but `servers` is here (a unit test holds them in step).
_FLEET_RULES: dict[str, tuple] = {
    "credentials_file": ("str",),
    "tls_ca_file": ("str",),
    "tls_cert_file": ("str",),
    "tls_key_file": ("str",),
    "members_bucket": ("str",),
    "legs_bucket": ("str",),
    "publish_interval_ms": ("int", 100, 60_000),
    "ttl_s": ("float", 1.0, 3600.0),
    "top_n": ("int", 0, 100_000),
    "alternatives": ("int", 0, 7),
    "legs_per_message": ("int", 1, 5000),
    "max_writes_per_s": ("int", 1, 100_000),
    "watch": ("str",),
}
FLEET_WATCH = ("all", "peers")
_FLEET_KEYS = ("servers", *_FLEET_RULES)
_BUCKET_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")

_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number",
               "bool": "true or false", "list": "an array", "table": "a table"}

_TOML_POSITION = re.compile(r"\s*\((?:at line (\d+), column \d+|at end of document)\)\s*$")

Path = tuple


def _is_kind(v: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(v, bool)
    if isinstance(v, bool):
        return False
    return isinstance(v, {"str": str, "int": int, "float": (int, float),
                          "list": list, "table": dict}[kind])


def _describe(v: Any) -> str:
    """A value for a message; never echoes a string that could be a key."""
    if isinstance(v, bool):
        return f"boolean {str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"{type(v).__name__} {v}"
    if isinstance(v, str):
        return "a string" if len(v) >= 40 else f"string {v!r}"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    return type(v).__name__


def _label(path: Path) -> str:
    """("destination", 0, "weights", 1) -> "destination.weights[1]": the key as the
    user wrote it (which [[table]] is told by the line number)."""
    out = ".".join(p for p in path if isinstance(p, str))
    return f"{out}[{path[-1]}]" if path and isinstance(path[-1], int) and len(path) > 2 else out


def _where(path: Path) -> str:
    """The table header a path lives under, as written in the file."""
    if len(path) >= 2 and isinstance(path[1], int):
        return f"[[{path[0]}]]" if len(path) == 2 else f"{_label(path)}"
    return f"[{_label(path)}]"


def _overlapping(net: IPNetwork, covers: dict, where) -> Optional[tuple]:
    """The earlier prefix of one destination that `net` overlaps, else None (and `net`
    is recorded). CIDR prefixes either nest or are disjoint, so `net` overlaps an earlier
    one iff one is a supernet of the other: `covers` maps every supernet (and the prefix
    itself) of each earlier prefix to it, which keeps 10,000 prefixes linear, not
    quadratic."""
    bits = net.max_prefixlen
    addr = int(net.network_address)
    key = (net.version, addr, net.prefixlen)
    if key in covers:                     # net equals or covers an earlier prefix
        return covers[key]
    for plen in range(net.prefixlen):     # an earlier prefix covers net
        mask = ((1 << plen) - 1) << (bits - plen)
        hit = covers.get((net.version, addr & mask, plen))
        if hit and hit[0].prefixlen == plen:
            return hit
    for plen in range(net.prefixlen + 1):
        mask = ((1 << plen) - 1) << (bits - plen)
        covers.setdefault((net.version, addr & mask, plen), (net, where))
    return None


def _did_you_mean(word: str, choices, what: str = "") -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"{what or 'valid'}: {', '.join(choices)}" if choices else ""


def _ifname_problem(name: str) -> str:
    if not name:
        return "is empty"
    if len(name.encode()) > names.IFNAMSIZ:
        return f"is {len(name.encode())} bytes long, at most {names.IFNAMSIZ}"
    if name in (".", "..") or re.search(r"[/:\s\x00-\x1f\x7f]", name):
        return "is not a valid interface name"
    return ""


def _listen_problem(s: str) -> str:
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        return "needs a port 1..65535 after ':'"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            if ipaddress.ip_address(host).version == 6:
                return ""
        except ValueError:
            pass
        return "has an invalid IPv6 address in brackets"
    try:
        if ipaddress.ip_address(host).version == 4:
            return ""
    except ValueError:
        pass
    return "needs an IPv4 address, or an IPv6 address in brackets"


_HEADER_LINE = re.compile(r"\s*(\[\[?)\s*([^\]#]*?)\s*\]")
_KEY_LINE = re.compile(r"\s*((?:[A-Za-z0-9_-]+|\"[^\"\n]*\"|'[^'\n]*')"
                       r"(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"\n]*\"|'[^'\n]*'))*)\s*=")


def _key_of(line: str) -> Optional[str]:
    m = _KEY_LINE.match(line)
    if not m:
        return None
    return ".".join(part.strip().strip("\"'") for part in re.split(r"\s*\.\s*(?=[^\"']*(?:[\"'][^\"']*[\"'][^\"']*)*$)",
                                                            m.group(1)))


def _header_of(line: str) -> Optional[str]:
    m = _HEADER_LINE.match(line)
    return f"{m.group(1)}{m.group(2)}{']' * len(m.group(1))}" if m else None


def _syntax_problem(file: str, e: tomllib.TOMLDecodeError, text: str) -> Problem:
    """A tomllib error as file:line naming the key or table involved (a duplicate
    says which one and where it was first defined)."""
    msg = str(e)
    m = _TOML_POSITION.search(msg)
    lines = text.split("\n")
    line = int(m.group(1)) if m and m.group(1) else max(1, len(lines))
    if m:
        msg = msg[:m.start()]
    hint = "TOML: strings in double quotes, tables as [name], each peer/destination as [[name]]"
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    key, header = _key_of(here), _header_of(here)
    # the table the line is in: the nearest header above it
    section_start = 0
    section = "the top level"
    for n in range(line - 2, -1, -1):
        h = _header_of(lines[n])
        if h:
            section_start, section = n + 1, h
            break
    if "overwrite" in msg and key:
        first = next((n + 1 for n in range(section_start, line - 1)
                      if _key_of(lines[n]) == key), None)
        where = f" (first at line {first})" if first else ""
        return Problem(file, line, f"TOML syntax error: key {key!r} is defined twice in "
                       f"{section}{where}", "remove one of them; each key once per table")
    if "declare" in msg and header:
        first = next((n + 1 for n in range(0, line - 1) if _header_of(lines[n]) == header),
                     None)
        where = f" (first at line {first})" if first else ""
        return Problem(file, line, f"TOML syntax error: table {header} is declared twice"
                       f"{where}", "merge them into one; use [[name]] for a repeated table")
    if "overwrite" in msg or "declare" in msg:
        hint = "this key or table is defined twice"
    if key:
        msg += f", in the value of key {key!r}"
    elif header:
        msg += f", in table header {header}"
    else:                       # inside a multi-line value: the key that opened it
        for n in range(line - 2, section_start - 1, -1):
            k = _key_of(lines[n])
            if k:
                msg += f", in the value of key {k!r} (line {n + 1})"
                break
            if _header_of(lines[n]):
                break
    return Problem(file, line, f"TOML syntax error: {msg}", hint)
