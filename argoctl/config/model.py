"""Per-host configuration: the TOML file -> validated, immutable model.

The model below is the contract every other module reads (plan, datapath,
engine, lab). The loader turns a file into it or raises ConfigError with every
problem found, each with file:line and a hint.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Optional, Union

from argoctl import names

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

TunnelKind = Literal["gre", "wireguard"]
ProbeKind = Literal["udp", "icmp", "tcp"]

DIRECT = "direct"
TOTAL_WEIGHT = 100     # a destination's weights add up to this (the engine's, and the first set)


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

    def first_weights(self) -> dict[str, tuple[int, bool]]:
        return first_weights(self.paths, self.weights)


def first_weights(paths: tuple[str, ...], weights: Optional[tuple[int, ...]] = None
                  ) -> dict[str, tuple[int, bool]]:
    """The one rule for a destination's first path set, before any measurement:
    what `up` writes, what `run` starts from and holds until measurements decide.
    The configured weights; else everything on `direct` if it is a candidate,
    else on the first path. Every path up."""
    if weights:
        return {p: (w, True) for p, w in zip(paths, weights)}
    first = DIRECT if DIRECT in paths else paths[0]
    return {p: (TOTAL_WEIGHT if p == first else 0, True) for p in paths}


def choice_of(paths: tuple[str, ...], weights: dict[str, tuple[int, bool]]) -> str:
    """The path taking most new flows (the earlier in preference order on a tie)."""
    return max(paths, key=lambda p: (weights[p][0], -paths.index(p)))


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


FAST_DIVISOR = 4       # paths in doubt: probes and decisions this much more often


@dataclass(frozen=True)
class Timing:
    """Every time the loop runs by, derived from the policy in one place
    (Policy.timing) and handed as values to the estimator, the engine, the
    daemon, the prober and the compiled path state (_pathcore)."""
    interval_s: float          # probe interval per (destination, path), before jitter
    jitter: float              # +- fraction of the interval
    timeout_s: float           # a probe without a reply this long is lost
    detect_s: float            # silence that makes an up path down (BFD: multiplier x interval)
    suspect_after_s: float     # silence that counts as the first miss (see below)
    fast_divisor: float        # paths in doubt are probed (and decided) this much more often
    fast_interval_s: float
    hold_down_s: float         # a recovered path is held this long before it may be chosen
    startup_grace_s: float     # the default path's first measurement is awaited this long


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
    reroute: bool = True               # protective reroute: an unanswered SYN moves its flow
    responder_key_file: Optional[str] = None  # shared key for UDP probe MACs
    metrics_listen: str = "127.0.0.1:9474"

    @cached_property
    def timing(self) -> Timing:
        return self.timing_at(1)

    def timing_at(self, pace: int) -> Timing:
        """The timing of a stream probed every `pace` intervals (fleet mode slows
        streams whose path other evidence vouches for: argoctl/fleet/rates.py).
        The same rule as every stream's, at pace x the interval: such a stream is
        suspect after one of *its* intervals plus a timeout, and down after
        detect_multiplier of *its* intervals (BFD: detection time = multiplier x
        the agreed interval), so it is neither declared down after 3 missed base
        intervals nor kept up forever. pace 1 is `timing` itself."""
        cache = self.__dict__.setdefault("_timings", {})
        t = cache.get(pace)
        if t is None:
            t = cache[pace] = self._timing(self.probe_interval_ms * pace / 1000.0)
        return t

    def _timing(self, interval: float) -> Timing:
        detect = self.detect_multiplier * interval
        jittered = interval * (1 + self.probe_jitter)
        # The first miss: the next reply is overdue by a whole probe timeout. Kept
        # below the detection time (so suspect comes first) but never below one
        # (jittered) interval, where it would fire on noise.
        overdue = jittered + self.probe_timeout_ms / 1000.0
        suspect = min(detect, max(jittered, min(overdue, detect - interval / 2)))
        return Timing(interval_s=interval, jitter=self.probe_jitter,
                      timeout_s=self.probe_timeout_ms / 1000.0, detect_s=detect,
                      suspect_after_s=suspect, fast_divisor=FAST_DIVISOR,
                      fast_interval_s=interval / FAST_DIVISOR, hold_down_s=self.hold_down_s,
                      startup_grace_s=detect)


@dataclass(frozen=True)
class Fleet:
    """[fleet]: share measurements through NATS JetStream (docs/fleet.md). Absent:
    the single-host tool, exactly as without fleet mode."""
    servers: tuple[str, ...]               # nats://host:port or tls://host:port, one per server
    credentials_file: Optional[str] = None   # TOML user/password (0600), absolute
    tls_ca_file: Optional[str] = None
    tls_cert_file: Optional[str] = None
    tls_key_file: Optional[str] = None     # 0600
    members_bucket: str = "argoctl_members"
    legs_bucket: str = "argoctl_legs"
    publish_interval_ms: int = 1000
    ttl_s: float = 15.0                    # the buckets' max age; readers drop older data
    top_n: int = 50                        # destinations with their own Prometheus series
    alternatives: int = 2                  # k: alternatives probed end to end besides the choice
    legs_per_message: int = 200
    max_writes_per_s: int = 50
    # whose legs to watch: "all" (every host's: `fleet status` shows the whole
    # fleet) or "peers" (only the relays this host composes with: what a large
    # fleet needs, docs/fleet.md "Scale")
    watch: str = "all"


@dataclass(frozen=True)
class Config:
    path: str                          # file it came from (for messages)
    node: Node
    peers: tuple[Peer, ...]
    destinations: tuple[Destination, ...]
    routing: Routing = field(default_factory=Routing)
    policy: Policy = field(default_factory=Policy)
    fleet: Optional[Fleet] = None
    notes: tuple[str, ...] = ()        # not problems: what up/run will do (files they create)

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
    """One problem of a config file. Message and hint are redacted on creation
    (keys.redact): a key pasted into any field never reaches a terminal or a log."""
    file: str
    line: int
    message: str
    hint: str = ""

    def __post_init__(self):
        from argoctl.keys import redact
        object.__setattr__(self, "file", redact(self.file))
        object.__setattr__(self, "message", redact(self.message))
        object.__setattr__(self, "hint", redact(self.hint))

    def __str__(self) -> str:
        s = f"{self.file}:{self.line}: {self.message}"
        return f"{s} (hint: {self.hint})" if self.hint else s
