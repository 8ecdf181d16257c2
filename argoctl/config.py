"""Per-host configuration: the TOML file -> validated, immutable model.

The model below is the contract every other module reads (plan, datapath,
engine, lab). The loader turns a file into it or raises ConfigError with every
problem found, each with file:line and a hint.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Optional, Union

from argoctl import keys, mac, names
from argoctl.tomlpos import Locator

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

TunnelKind = Literal["gre", "wireguard"]
ProbeKind = Literal["udp", "icmp", "tcp"]

DIRECT = "direct"


@dataclass(frozen=True)
class Node:
    name: str
    address: IPAddress                 # underlay address tunnels are sourced from
    tunnel_address: IPAddress          # overlay address put on every tunnel device
    steer_interfaces: tuple[str, ...] = ()   # LAN-facing interfaces whose ingress is steered
    private_key_file: Optional[str] = None   # WireGuard private key (0600), if any WG peer
    relay: bool = True                 # forward traffic that arrives through tunnels


@dataclass(frozen=True)
class Peer:
    name: str
    id: int                            # path id 1..254: table/rule/mark derive from it
    address: IPAddress                 # peer's underlay address
    tunnel: TunnelKind
    tunnel_address: IPAddress          # peer's overlay address (the far end of the tunnel)
    public_key: Optional[str] = None   # WireGuard: peer's public key (base64)
    port: Optional[int] = None         # WireGuard: UDP port the peer listens on for us
    listen_port: Optional[int] = None  # WireGuard: our UDP port for this peer
    gre_key: Optional[int] = None      # GRE: optional key (both ends must agree)
    mtu: Optional[int] = None          # override the computed tunnel MTU


@dataclass(frozen=True)
class Probe:
    kind: ProbeKind
    target: IPAddress
    port: Optional[int] = None         # udp: responder port; tcp: port to SYN


@dataclass(frozen=True)
class Destination:
    name: str
    id: int                            # 1-based, config order: the datapath's dest id
    prefixes: tuple[IPNetwork, ...]
    paths: tuple[str, ...]             # "direct" and/or peer names, in preference order
    probe: Optional[Probe] = None
    weights: Optional[tuple[int, ...]] = None  # static split until the loop decides


@dataclass(frozen=True)
class Routing:
    table_base: int = names.DEFAULT_TABLE_BASE
    rule_priority_base: int = names.DEFAULT_RULE_PRIORITY_BASE
    fwmark_mask: int = names.DEFAULT_FWMARK_MASK

    def table(self, path_id: int) -> int:
        return 254 if path_id == names.DIRECT_PATH_ID else self.table_base + path_id

    def priority(self, path_id: int) -> int:
        return self.rule_priority_base + path_id

    def mark(self, path_id: int) -> int:
        return names.path_mark(path_id, self.fwmark_mask)


@dataclass(frozen=True)
class Policy:
    probe_interval_ms: int = 1000      # active probe interval per (destination, path)
    probe_jitter: float = 0.1          # +- fraction of the interval
    probe_timeout_ms: int = 1000
    detect_multiplier: int = 3         # BFD-like: down after this many missed intervals
    recover_probes: int = 5            # consecutive successes before suspect/down -> up
    hold_down_s: float = 30.0          # after a path fails, it may not be chosen again for this long
    switch_relative: float = 0.10      # a candidate must be this fraction better ...
    switch_absolute_ms: float = 5.0    # ... and this many ms better (raw and smoothed)
    loss_window: int = 20              # probes in the loss window
    rtt_alpha: float = 0.125           # EWMA weight for smoothed RTT (RFC 6298)
    split: bool = False                # weighted split across near-equal paths
    responder_key_file: Optional[str] = None  # shared key for UDP probe MACs
    metrics_listen: str = "127.0.0.1:9474"


@dataclass(frozen=True)
class Config:
    path: str                          # file it came from (for messages)
    node: Node
    peers: tuple[Peer, ...]
    destinations: tuple[Destination, ...]
    routing: Routing = field(default_factory=Routing)
    policy: Policy = field(default_factory=Policy)

    def peer(self, name: str) -> Peer:
        for p in self.peers:
            if p.name == name:
                return p
        raise KeyError(name)

    def path_id(self, path_name: str) -> int:
        return names.DIRECT_PATH_ID if path_name == DIRECT else self.peer(path_name).id

    def measurement(self, dest: "Destination", path: str) -> tuple:
        """What measuring `path` for `dest` observes. Destinations that probe the
        same target the same way measure the same thing on a path, so they share
        one probe stream and one estimator (a thousand prefixes behind one
        origin cost one probe per path, not a thousand; babeld measures per
        neighbour, not per route). Without a probe a path is its own."""
        if dest.probe is None:
            return ("dest", dest.name, path)
        return ("probe", path, dest.probe)

    def summary(self) -> str:
        """One line for `argoctl validate` (no key material)."""
        n_prefixes = sum(len(d.prefixes) for d in self.destinations)
        return (f"{self.path}: ok: node {self.node.name}, {len(self.peers)} peers, "
                f"{len(self.destinations)} destinations, {n_prefixes} prefixes")


class ConfigError(Exception):
    """Every problem found in a config file; str() lists them as file:line: message (hint)."""

    def __init__(self, problems: list["Problem"]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str
    hint: str = ""

    def __str__(self) -> str:
        s = f"{self.file}:{self.line}: {self.message}"
        return f"{s} (hint: {self.hint})" if self.hint else s


def load(path: str) -> Config:
    """Parse and validate a config file; raise ConfigError listing every problem.

    Pure: reads the file (and the key files it names), changes nothing."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError([Problem(path, 1, f"cannot read config file: {e.strerror}")]) from None
    return check(path, data)


# ---------------------------------------------------------------------------
# Validation. One pass over the tomllib document collects every problem; the
# model is returned only when there is none. Paths like ("peer", 1, "address")
# name a value both for messages and for the line locator.

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
MAX_DESTINATION_NAME = 63
MAX_PATHS = 8                     # pathset entries per destination in the datapath
MAX_WEIGHT = 65535
MTU_RANGE = (1280, 65535)         # 1280: the IPv6 minimum, so both families fit
PORT_RANGE = (1, 65535)
GRE_KEY_RANGE = (0, 2**32 - 1)
MAX_TABLE = 2**32 - 1
MAIN_RULE_PRIORITY = 32766        # the kernel's default "from all lookup main"
TUNNEL_KINDS = ("gre", "wireguard")
PROBE_KINDS = ("udp", "icmp", "tcp")

_TABLES = {"node": "table", "peer": "array", "destination": "array",
           "routing": "table", "policy": "table"}
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
    "responder_key_file": ("str",),
    "metrics_listen": ("str",),
}

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


class _Checker:
    def __init__(self, file: str, text: str):
        self.file = file
        self.loc = Locator(text)
        self.base_dir = os.path.dirname(os.path.abspath(file))
        self.problems: list[Problem] = []

    # -- reporting -------------------------------------------------------

    def err(self, path: Path, message: str, hint: str = "") -> None:
        self.problems.append(Problem(self.file, self.loc.line(path), message, hint))

    def line(self, path: Path) -> int:
        return self.loc.line(path)

    # -- typed access ----------------------------------------------------

    def get(self, t: dict, path: Path, key: str, kind: str, required: bool = False):
        """The value of t[key] if present and of the kind, else None (problem recorded)."""
        if key not in t:
            if required:
                where = _where(path) if path else "the file"
                self.err(path, f"missing required key {_label(path + (key,))!r} in {where}",
                         f"add: {key} = ...")
            return None
        v = t[key]
        if not _is_kind(v, kind):
            self.err(path + (key,), f"{_label(path + (key,))}: expected {_KIND_NAMES[kind]}, "
                     f"got {_describe(v)}")
            return None
        return v

    def get_list(self, t: dict, path: Path, key: str, kind: str,
                 required: bool = False) -> Optional[list[tuple[int, Any]]]:
        """Elements of an array as (index, value), dropping (and reporting) wrong kinds."""
        v = self.get(t, path, key, "list", required)
        if v is None:
            return None
        out = []
        for i, item in enumerate(v):
            if _is_kind(item, kind):
                out.append((i, item))
            else:
                self.err(path + (key, i), f"{_label(path + (key,))}[{i}]: expected "
                         f"{_KIND_NAMES[kind]}, got {_describe(item)}")
        return out

    def in_range(self, path: Path, v, lo, hi, lo_open: bool = False, why: str = "") -> bool:
        ok = (v > lo if lo_open else v >= lo) and v <= hi
        if not ok:
            bound = f"greater than {lo}" if lo_open else f"at least {lo}"
            self.err(path, f"{_label(path)}: {v} is out of range ({bound}, at most {hi})", why)
        return ok

    def unknown_keys(self, t: dict, path: Path, known, where: str) -> None:
        for key in t:
            if key not in known:
                self.err(path + (key,), f"unknown key {key!r} in {where}",
                         _did_you_mean(key, known, "known keys"))

    def table(self, doc: dict, key: str, required: bool = False) -> Optional[dict]:
        if key not in doc:
            if required:
                self.err((), f"missing required table [{key}]", f"add a [{key}] section")
            return None
        v = doc[key]
        if not isinstance(v, dict):
            self.err((key,), f"{key} must be a table: write [{key}]")
            return None
        return v

    def array(self, doc: dict, key: str) -> list[tuple[int, dict]]:
        v = doc.get(key, [])
        if not isinstance(v, list):
            self.err((key,), f"{key} must be an array of tables: write [[{key}]] for each {key}")
            return []
        out = []
        for i, item in enumerate(v):
            if isinstance(item, dict):
                out.append((i, item))
            else:
                self.err((key, i), f"{key}[{i}] must be a table, got {_describe(item)}",
                         f"write [[{key}]] for each {key}")
        return out

    def ip(self, t: dict, path: Path, key: str, required: bool = True) -> Optional[IPAddress]:
        v = self.get(t, path, key, "str", required)
        if v is None:
            return None
        try:
            return ipaddress.ip_address(v)
        except ValueError:
            hint = "an address, without a prefix length" if "/" in v else \
                "an IPv4 address like 192.0.2.1 or an IPv6 address like 2001:db8::1"
            self.err(path + (key,), f"{_label(path + (key,))}: {v!r} is not an IP address", hint)
            return None

    def name(self, t: dict, path: Path, key: str, max_len: int) -> Optional[str]:
        v = self.get(t, path, key, "str", required=True)
        if v is None:
            return None
        p = path + (key,)
        if len(v) > max_len:
            why = (f"the tunnel device is {names.LINK_PREFIX}<name> and an interface name "
                   f"has at most {names.IFNAMSIZ} characters") if max_len == names.MAX_PEER_NAME \
                else "choose a shorter name"
            self.err(p, f"{_label(p)}: {v!r} is {len(v)} characters long, at most {max_len} "
                     "allowed", why)
        elif not _NAME_RE.match(v):
            hint = "lowercase letters, digits and '-', not starting with '-'"
            fixed = re.sub(r"[^a-z0-9-]", "-", v.lower()).lstrip("-")
            if fixed and fixed != v:
                hint += f"; e.g. {fixed!r}"
            self.err(p, f"{_label(p)}: {v!r} is not a valid name", hint)
        return v

    def port(self, t: dict, path: Path, key: str, required: bool = False) -> Optional[int]:
        v = self.get(t, path, key, "int", required)
        if v is not None and not self.in_range(path + (key,), v, *PORT_RANGE):
            return None
        return v

    def resolve(self, file: str) -> str:
        """Key files are relative to the config file's directory."""
        return os.path.normpath(os.path.join(self.base_dir, file))

    def duplicates(self, items: list[tuple[Path, Any]], what: str, hint: str = "") -> None:
        """Report every item whose value appeared before (pointing at the first)."""
        first: dict = {}
        for path, value in items:
            if value is None:
                continue
            if value in first:
                self.err(path, f"duplicate {what} {str(value)!r} (first at line "
                         f"{self.line(first[value])})", hint)
            else:
                first[value] = path

    # -- sections ----------------------------------------------------------

    def document(self, doc: dict) -> Optional[Config]:
        for key in doc:
            if key not in _TABLES:
                hint = _did_you_mean(key, _TABLES, "tables")
                if key in _NODE_KEYS:
                    hint = "keys of this node go under [node]"
                kind = "table" if isinstance(doc[key], (dict, list)) else "key"
                self.err((key,), f"unknown {kind} {key!r}", hint)
        node = self.node(doc)
        peers = self.peers(doc, node)
        routing = self.routing(doc, peers)
        destinations = self.destinations(doc, peers)
        policy = self.policy(doc)
        self.key_file(node, peers)
        if self.problems or node is None:
            return None
        return Config(path=self.file, node=node, peers=tuple(p for _, p in peers),
                      destinations=tuple(destinations), routing=routing, policy=policy)

    def node(self, doc: dict) -> Optional[Node]:
        t = self.table(doc, "node", required=True)
        if t is None:
            return None
        p = ("node",)
        self.unknown_keys(t, p, _NODE_KEYS, "[node]")
        name = self.name(t, p, "name", names.MAX_PEER_NAME)
        address = self.ip(t, p, "address")
        tunnel_address = self.ip(t, p, "tunnel_address")
        steer = []
        for i, ifname in self.get_list(t, p, "steer_interfaces", "str") or []:
            ip = p + ("steer_interfaces", i)
            problem = _ifname_problem(ifname)
            if problem:
                self.err(ip, f"node.steer_interfaces[{i}]: {ifname!r} {problem}",
                         f"an interface name: 1..{names.IFNAMSIZ} characters, no '/', ':' "
                         "or spaces")
            elif ifname.startswith(names.LINK_PREFIX):
                self.err(ip, f"node.steer_interfaces[{i}]: {ifname!r} is an argoctl tunnel "
                         "name", "steer the LAN-facing interfaces, not the tunnels")
            steer.append((ip, ifname))
        self.duplicates(steer, "steer interface")
        key_file = self.get(t, p, "private_key_file", "str")
        relay = self.get(t, p, "relay", "bool")
        return Node(name=name, address=address, tunnel_address=tunnel_address,
                    steer_interfaces=tuple(s for _, s in steer),
                    private_key_file=self.resolve(key_file) if key_file else None,
                    relay=True if relay is None else relay)

    def peers(self, doc: dict, node: Optional[Node]) -> list[tuple[Path, Peer]]:
        out = []
        for i, t in self.array(doc, "peer"):
            p = ("peer", i)
            self.unknown_keys(t, p, _PEER_KEYS, "[[peer]]")
            name = self.name(t, p, "name", names.MAX_PEER_NAME)
            if name == DIRECT:
                self.err(p + ("name",), f"peer.name: {DIRECT!r} is reserved for the direct path",
                         "choose another peer name")
            elif node and name is not None and name == node.name:
                self.err(p + ("name",), f"peer.name: {name!r} is this node's own name",
                         "a node is not its own peer")
            address = self.ip(t, p, "address")
            tunnel = self.get(t, p, "tunnel", "str", required=True)
            if tunnel is not None and tunnel not in TUNNEL_KINDS:
                self.err(p + ("tunnel",), f"peer.tunnel: {tunnel!r} is not a tunnel kind",
                         _did_you_mean(tunnel, TUNNEL_KINDS, "one of"))
                tunnel = None
            tunnel_address = self.ip(t, p, "tunnel_address")
            pid = self.get(t, p, "id", "int")
            if "id" not in t:
                pid = i + 1
            elif pid is not None and not self.in_range(p + ("id",), pid, 1, names.MAX_PATH_ID,
                                                       why="path ids 1..254 (0 is direct)"):
                pid = None
            gre_key = self.get(t, p, "gre_key", "int")
            if gre_key is not None:
                self.in_range(p + ("gre_key",), gre_key, *GRE_KEY_RANGE)
                if tunnel == "wireguard":
                    self.err(p + ("gre_key",), "peer.gre_key is a GRE setting, but this peer "
                             "uses tunnel = \"wireguard\"", "remove gre_key")
            mtu = self.get(t, p, "mtu", "int")
            if mtu is not None:
                self.in_range(p + ("mtu",), mtu, *MTU_RANGE)
            public_key = port = listen_port = None
            if tunnel == "wireguard":
                public_key = self.get(t, p, "public_key", "str", required=True)
                if public_key is not None:
                    try:
                        keys.decode(public_key)
                    except ValueError as e:
                        self.err(p + ("public_key",), f"peer.public_key is not a WireGuard "
                                 f"public key: {e}", "the peer's `argoctl keygen` (or `wg "
                                 "pubkey`) output: 44 characters of base64")
                        public_key = None
                port = self.port(t, p, "port", required=True)
                listen_port = self.port(t, p, "listen_port", required=True)
            elif tunnel == "gre":
                for key in _WG_KEYS:
                    if key in t:
                        self.err(p + (key,), f"peer.{key} is a WireGuard setting, but this "
                                 "peer uses tunnel = \"gre\"",
                                 "remove it, or set tunnel = \"wireguard\"")
            out.append((p, Peer(name=name, id=pid, address=address, tunnel=tunnel,
                                tunnel_address=tunnel_address, public_key=public_key,
                                port=port, listen_port=listen_port, gre_key=gre_key, mtu=mtu)))
        self.peer_relations(out, node)
        return out

    def peer_relations(self, peers: list[tuple[Path, Peer]], node: Optional[Node]) -> None:
        self.duplicates([(p + ("name",), x.name) for p, x in peers], "peer name")
        # a defaulted id has no line of its own: the locator falls back to [[peer]]
        self.duplicates([(p + ("id",), x.id) for p, x in peers], "peer id",
                        "ids default to the peer's position (1-based); set distinct ids")
        self.duplicates([(p + ("listen_port",), x.listen_port) for p, x in peers],
                        "listen_port", "each WireGuard peer needs its own local port")
        tunnel_addrs = [(p + ("tunnel_address",), x.tunnel_address) for p, x in peers]
        if node and node.tunnel_address is not None:
            tunnel_addrs.insert(0, (("node", "tunnel_address"), node.tunnel_address))
        self.duplicates(tunnel_addrs, "tunnel address",
                        "every node and peer needs its own overlay address")
        gre_ends = [(p + ("address",), (str(x.address), x.gre_key)) for p, x in peers
                    if x.tunnel == "gre" and x.address is not None]
        first: dict = {}
        for path, end in gre_ends:
            if end in first:
                self.err(path, f"peer.address {end[0]}: a second GRE tunnel to the same "
                         f"address with the same key (first at line {self.line(first[end])})",
                         "the kernel keeps one GRE tunnel per (local, remote, key): set "
                         "distinct gre_key values")
            first.setdefault(end, path)
        if node is None:
            return
        for p, x in peers:
            if x.address is not None and node.address is not None:
                if x.address == node.address:
                    self.err(p + ("address",), f"peer.address {x.address} is this node's own "
                             "address", "use the peer's underlay address")
                elif x.address.version != node.address.version:
                    self.err(p + ("address",), f"peer.address {x.address} is IPv"
                             f"{x.address.version} but node.address {node.address} is IPv"
                             f"{node.address.version}",
                             "a tunnel's two ends must be the same family")
            if (x.tunnel_address is not None and node.tunnel_address is not None
                    and x.tunnel_address.version != node.tunnel_address.version):
                self.err(p + ("tunnel_address",), f"peer.tunnel_address {x.tunnel_address} is "
                         f"IPv{x.tunnel_address.version} but node.tunnel_address is IPv"
                         f"{node.tunnel_address.version}", "use one family for the overlay")

    def routing(self, doc: dict, peers: list[tuple[Path, Peer]]) -> Routing:
        t = self.table(doc, "routing")
        if t is None:
            t = {}
        p = ("routing",)
        self.unknown_keys(t, p, [f.name for f in fields(Routing)], "[routing]")
        ids = [x.id for _, x in peers if x.id is not None]
        max_id = max(ids, default=0)
        values = {}
        for f in fields(Routing):
            v = self.get(t, p, f.name, "int")
            values[f.name] = f.default if v is None else v
        r = Routing(**values)
        tb, pb, mask = r.table_base, r.rule_priority_base, r.fwmark_mask
        if "table_base" in t and values["table_base"] is not None:
            tp = p + ("table_base",)
            if tb < 1:
                self.err(tp, f"routing.table_base: {tb} must be at least 1",
                         "path N uses table table_base + N; e.g. 7200")
            elif tb + max_id > MAX_TABLE:
                self.err(tp, f"routing.table_base: {tb} + peer id {max_id} exceeds the largest "
                         f"table {MAX_TABLE}", "e.g. 7200")
            else:
                clash = sorted({tb + i for i in ids} & names.RESERVED_TABLES)
                if clash:
                    self.err(tp, f"routing.table_base: {tb} puts peer ids in reserved table(s) "
                             f"{', '.join(map(str, clash))} (253 default, 254 main, 255 local)",
                             "choose a table_base so that table_base+1 .. table_base+254 "
                             "avoids 253..255, e.g. 7200")
        if "rule_priority_base" in t:
            pp = p + ("rule_priority_base",)
            if pb < 1:
                self.err(pp, f"routing.rule_priority_base: {pb} must be at least 1",
                         "priority 0 is the kernel's local-table rule")
            elif pb + max_id >= MAIN_RULE_PRIORITY:
                self.err(pp, f"routing.rule_priority_base: {pb} + peer id {max_id} reaches "
                         f"{pb + max_id}, at or after the main-table rule ({MAIN_RULE_PRIORITY})",
                         f"rules after {MAIN_RULE_PRIORITY} never match; e.g. 7200")
        if "fwmark_mask" in t:
            mp = p + ("fwmark_mask",)
            if not 0 < mask <= 0xFFFFFFFF:
                self.err(mp, f"routing.fwmark_mask: {mask:#x} must be a non-zero 32-bit value",
                         "e.g. 0x00ff0000")
            else:
                field_max = mask >> names.mark_shift(mask)
                if field_max & (field_max + 1):
                    self.err(mp, f"routing.fwmark_mask: {mask:#010x} is not one contiguous run "
                             "of bits", "e.g. 0x00ff0000")
                elif field_max <= max_id:
                    need = max_id.bit_length() + (1 if (max_id + 1) & max_id == 0 else 0)
                    self.err(mp, f"routing.fwmark_mask: {mask:#010x} holds values up to "
                             f"{field_max}, too narrow for peer id {max_id} plus the all-ones "
                             "value of the direct path",
                             f"use at least {need} bits, e.g. 0x00ff0000")
        return r

    def destinations(self, doc: dict, peers: list[tuple[Path, Peer]]) -> list[Destination]:
        peer_names = [x.name for _, x in peers if x.name]
        path_names = [DIRECT] + peer_names
        claimed: dict = {}   # prefix -> (destination name, path) across destinations
        out = []
        dest_names = []
        for i, t in self.array(doc, "destination"):
            p = ("destination", i)
            self.unknown_keys(t, p, _DEST_KEYS, "[[destination]]")
            name = self.name(t, p, "name", MAX_DESTINATION_NAME)
            dest_names.append((p + ("name",), name))
            nets = self.prefixes(t, p, name, claimed)
            paths = self.paths(t, p, path_names)
            weights = self.weights(t, p, paths)
            probe = self.probe(t, p)
            out.append(Destination(name=name, id=i + 1, prefixes=tuple(nets),
                                   paths=tuple(paths or ()), probe=probe,
                                   weights=tuple(weights) if weights is not None else None))
        self.duplicates(dest_names, "destination name")
        return out

    def prefixes(self, t: dict, p: Path, dest: Optional[str], claimed: dict) -> list[IPNetwork]:
        items = self.get_list(t, p, "prefixes", "str", required=True)
        if items is None:
            return []
        if not t["prefixes"]:
            self.err(p + ("prefixes",), "destination.prefixes is empty",
                     "list at least one prefix, e.g. 203.0.113.0/24")
        own: list[tuple[IPNetwork, Path]] = []
        covers: dict = {}   # (version, network int, len) of every prefix and its supernets
        for j, s in items:
            pp = p + ("prefixes", j)
            try:
                net = ipaddress.ip_network(s)
            except ValueError:
                try:
                    net = ipaddress.ip_network(s, strict=False)
                except ValueError:
                    self.err(pp, f"destination.prefixes[{j}]: {s!r} is not an IP prefix",
                             "like 203.0.113.0/24 or 2001:db8::/48")
                    continue
                self.err(pp, f"destination.prefixes[{j}]: {s!r} has host bits set",
                         f"the network address is {net}")
                continue
            clash = _overlapping(net, covers, pp)
            if clash:
                other, op = clash
                self.err(pp, f"destination.prefixes[{j}]: {net} overlaps {other} (line "
                         f"{self.line(op)}) in the same destination",
                         "list only the covering prefix")
            else:
                if net in claimed:
                    other_dest, op = claimed[net]
                    self.err(pp, f"destination.prefixes[{j}]: {net} is already in destination "
                             f"{other_dest!r} (line {self.line(op)})",
                             "a prefix belongs to one destination")
                else:
                    claimed[net] = (dest, pp)
            own.append((net, pp))
        return [n for n, _ in own]

    def paths(self, t: dict, p: Path, path_names: list[str]) -> Optional[list[str]]:
        items = self.get_list(t, p, "paths", "str", required=True)
        if items is None:
            return None
        pp = p + ("paths",)
        if not t["paths"]:
            self.err(pp, "destination.paths is empty", "list \"direct\" and/or peer names")
        elif len(t["paths"]) > MAX_PATHS:
            self.err(pp, f"destination.paths has {len(t['paths'])} paths, at most {MAX_PATHS}",
                     "the datapath keeps up to 8 candidate paths per destination")
        seen: dict[str, Path] = {}
        for j, name in items:
            ep = pp + (j,)
            if name in seen:
                self.err(ep, f"destination.paths[{j}]: {name!r} is listed twice (first at line "
                         f"{self.line(seen[name])})", "list each path once")
            elif name not in path_names:
                self.err(ep, f"destination.paths[{j}]: {name!r} is not \"direct\" or a peer",
                         _did_you_mean(name, path_names, "paths"))
            seen.setdefault(name, ep)
        return [name for _, name in items]

    def weights(self, t: dict, p: Path, paths: Optional[list[str]]) -> Optional[list[int]]:
        items = self.get_list(t, p, "weights", "int")
        if items is None:
            return None
        wp = p + ("weights",)
        ok = True
        for j, w in items:
            ok &= self.in_range(wp + (j,), w, 0, MAX_WEIGHT)
        if paths is not None and len(t["weights"]) != len(t["paths"]):
            self.err(wp, f"destination.weights has {len(t['weights'])} entries but paths has "
                     f"{len(t['paths'])}", "one weight per path, in the same order")
            ok = False
        elif t["weights"] and all(w == 0 for _, w in items) and len(items) == len(t["weights"]):
            self.err(wp, "destination.weights are all 0", "at least one path needs weight > 0")
            ok = False
        return [w for _, w in items] if ok else None

    def probe(self, t: dict, p: Path) -> Optional[Probe]:
        pt = self.get(t, p, "probe", "table")
        if pt is None:
            return None
        pp = p + ("probe",)
        self.unknown_keys(pt, pp, _PROBE_KEYS, "destination.probe")
        kind = self.get(pt, pp, "kind", "str", required=True)
        if kind is not None and kind not in PROBE_KINDS:
            self.err(pp + ("kind",), f"destination.probe.kind: {kind!r} is not a probe kind",
                     _did_you_mean(kind, PROBE_KINDS, "one of"))
            kind = None
        target = self.ip(pt, pp, "target")
        port = None
        if kind == "icmp":
            if "port" in pt:
                self.err(pp + ("port",), "destination.probe.port is not used by icmp probes",
                         "remove port, or use kind = \"udp\" or \"tcp\"")
        elif kind is not None:
            port = self.port(pt, pp, "port", required=True)
        return Probe(kind=kind, target=target, port=port)

    def policy(self, doc: dict) -> Policy:
        t = self.table(doc, "policy") or {}
        p = ("policy",)
        self.unknown_keys(t, p, _POLICY_RULES, "[policy]")
        values = {}
        for key, rule in _POLICY_RULES.items():
            v = self.get(t, p, key, rule[0])
            if v is None:
                continue
            if len(rule) > 1 and not self.in_range(p + (key,), v, rule[1], rule[2], rule[3]):
                continue
            values[key] = float(v) if rule[0] == "float" else v
        pol = Policy(**values)
        if ("probe_timeout_ms" in values and
                pol.probe_timeout_ms > pol.probe_interval_ms * pol.detect_multiplier):
            self.err(p + ("probe_timeout_ms",), f"policy.probe_timeout_ms: "
                     f"{pol.probe_timeout_ms} exceeds probe_interval_ms x detect_multiplier "
                     f"({pol.probe_interval_ms * pol.detect_multiplier})",
                     "a path would be declared down before its probe times out")
        if "metrics_listen" in values and values["metrics_listen"]:
            problem = _listen_problem(values["metrics_listen"])
            if problem:
                self.err(p + ("metrics_listen",), f"policy.metrics_listen: "
                         f"{values['metrics_listen']!r} {problem}",
                         "host:port with an IP literal, e.g. 127.0.0.1:9474 or [::1]:9474; "
                         "\"\" disables the exporter")
        if values.get("responder_key_file"):
            path = self.resolve(values["responder_key_file"])
            pol = Policy(**{**values, "responder_key_file": path})
            self.secret_file(p + ("responder_key_file",), path)
        return pol

    def secret_file(self, path: Path, file: str) -> None:
        """The responder/probe key: mode, owner and content as the prober will read it."""
        try:
            mac.read_key(file)
        except keys.KeyFileError as e:
            self.err(path, e.message, e.hint)

    def key_file(self, node: Optional[Node], peers: list[tuple[Path, Peer]]) -> None:
        if node is None:
            return
        wg = [x.name for _, x in peers if x.tunnel == "wireguard"]
        kp = ("node", "private_key_file")
        if node.private_key_file is None:
            if wg:
                self.err(("node",), f"missing required key 'node.private_key_file': peer "
                         f"{wg[0]!r} uses WireGuard",
                         f"argoctl keygen --private-key {node.name or 'node'}.key, then add "
                         f"private_key_file = \"{node.name or 'node'}.key\"")
            return
        try:
            private = keys.read_private_key(node.private_key_file)
        except keys.KeyFileError as e:
            self.err(kp, e.message, e.hint)
            return
        own = keys.public_key(private)
        for p, x in peers:
            if x.public_key is None:
                continue
            given = keys.decode(x.public_key)
            if given == private:
                self.err(p + ("public_key",), "peer.public_key is this node's PRIVATE key",
                         "remove it from this file now; use the public key printed by "
                         "`argoctl keygen` on the peer")
            elif given == own:
                self.err(p + ("public_key",), "peer.public_key is this node's own public key",
                         "use the public key printed by `argoctl keygen` on the peer")


def _ifname_problem(name: str) -> str:
    if not name:
        return "is empty"
    if len(name) > names.IFNAMSIZ:
        return f"is {len(name)} characters long, at most {names.IFNAMSIZ}"
    if name in (".", "..") or re.search(r"[/:\s]", name):
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


def _syntax_problem(file: str, e: tomllib.TOMLDecodeError, text: str) -> Problem:
    msg = str(e)
    m = _TOML_POSITION.search(msg)
    line = int(m.group(1)) if m and m.group(1) else max(1, text.count("\n") + 1)
    if m:
        msg = msg[:m.start()]
    hint = "TOML: strings in double quotes, tables as [name], each peer/destination as [[name]]"
    if "overwrite" in msg or "declare" in msg:
        hint = "this key or table is defined twice"
    return Problem(file, line, f"TOML syntax error: {msg}", hint)


def check(file: str, data: bytes) -> Config:
    """Validate the bytes of a config file named `file`; see load()."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError([Problem(file, line, "the file is not UTF-8 text")]) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([_syntax_problem(file, e, text)]) from None
    checker = _Checker(file, text)
    cfg = checker.document(doc)
    if checker.problems:
        raise ConfigError(sorted(checker.problems, key=lambda p: p.line))
    assert cfg is not None
    return cfg
