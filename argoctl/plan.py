"""Config -> the kernel state one host should have, and the ordered ops that get there.

`State` holds only objects argoctl owns (see names.py). Everything here is
plain data: `desired()` reads nothing from the kernel except through `env`
(underlay MTU, private keys), and `diff()` is a pure function, so both are
unit-testable and `up --dry-run` can print exactly what `up` would do.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, fields
from typing import Optional, Protocol

from argoctl import names
from argoctl.config import Config, Peer
from argoctl.nft import Nft, ruleset as nft_ruleset

# Bytes of encapsulation per tunnel kind and underlay family (outer IP + tunnel header).
OVERHEAD = {("gre", 4): 24, ("gre", 6): 44, ("wireguard", 4): 60, ("wireguard", 6): 80}
GRE_KEY_BYTES = 4
GRE_TTL = 64
WG_KEEPALIVE = 25
WG_ALLOWED_IPS = ("0.0.0.0/0", "::/0")

# Global sysctls a relay needs; their prior values are saved on up and restored on down.
FORWARDING = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")


class PlanError(Exception):
    """The config cannot be realised on this host (e.g. no underlay route to a peer)."""


class Env(Protocol):
    def underlay_mtu(self, address) -> int: ...
    def private_key(self, path: str) -> bytes: ...
    def public_key(self, private: bytes) -> str: ...


@dataclass(frozen=True, order=True)
class Link:
    name: str
    kind: str                          # gre | ip6gre | wireguard
    mtu: int
    local: Optional[str] = None        # gre/ip6gre
    remote: Optional[str] = None
    gre_key: Optional[int] = None
    ttl: Optional[int] = None
    listen_port: Optional[int] = None  # wireguard
    public_key: Optional[str] = None   # our own, derived from the private key (compares it)
    peer_public_key: Optional[str] = None
    endpoint: Optional[str] = None     # "addr:port" / "[addr]:port"
    keepalive: Optional[int] = None
    allowed_ips: tuple[str, ...] = ()
    private_key: Optional[bytes] = field(default=None, compare=False, repr=False)

    @property
    def key(self):
        return self.name

    @property
    def alias(self) -> str:
        return names.ALIAS_PREFIX + self.name[len(names.LINK_PREFIX):]

    def needs_recreate(self, other: "Link") -> bool:
        """True if going from `other` to self cannot be done in place (kind or GRE endpoints)."""
        if self.kind != other.kind:
            return True
        if self.kind != "wireguard":
            return (self.local, self.remote, self.gre_key, self.ttl) != (
                other.local, other.remote, other.gre_key, other.ttl)
        return False


@dataclass(frozen=True, order=True)
class Address:
    dev: str
    family: int                        # 4 | 6
    local: str
    peer: str

    @property
    def key(self):   # extra addresses on our link are drift too: the whole address is the key
        return (self.dev, self.family, self.local, self.peer)


@dataclass(frozen=True, order=True)
class Route:
    family: int
    table: int
    dst: str                           # "default" or a prefix
    dev: str                           # "" for a route without a device (blackhole)
    type: str = "unicast"              # unicast | blackhole
    metric: int = 0                    # compared for blackhole routes only (see read_owned)

    @property
    def key(self):
        return (self.family, self.table, self.dst, self.type)


@dataclass(frozen=True, order=True)
class Rule:
    family: int
    priority: int
    mark: int
    mask: int
    table: int
    action: str = "table"              # table: lookup `table`; blackhole: `not fwmark 0/mask`

    @property
    def key(self):
        return (self.family, self.priority)


@dataclass(frozen=True, order=True)
class Sysctl:
    path: str                          # under /proc/sys, slash-separated (names may hold dots)
    value: str

    @property
    def key(self):
        return self.path

    @property
    def dev(self) -> Optional[str]:
        parts = self.path.split("/")
        return parts[3] if len(parts) == 5 and parts[2] == "conf" else None


KINDS = (Link, Sysctl, Address, Route, Rule, Nft)   # add order; removals run in reverse
GLOBAL_SYSCTLS = frozenset(FORWARDING)


@dataclass(frozen=True)
class State:
    links: tuple[Link, ...] = ()
    sysctls: tuple[Sysctl, ...] = ()
    addresses: tuple[Address, ...] = ()
    routes: tuple[Route, ...] = ()
    rules: tuple[Rule, ...] = ()
    nft: tuple[Nft, ...] = ()

    def __post_init__(self):
        for f in fields(self):   # canonical order so two equal states compare equal
            object.__setattr__(self, f.name, tuple(sorted(getattr(self, f.name), key=_sort_key)))

    def objects(self, kind) -> tuple:
        return getattr(self, _FIELD[kind])

    def to_dict(self) -> dict:
        return {f.name: [_public(o) for o in getattr(self, f.name)] for f in fields(self)}


_FIELD = {Link: "links", Sysctl: "sysctls", Address: "addresses", Route: "routes",
          Rule: "rules", Nft: "nft"}


def _sort_key(obj):
    return repr(obj.key)


def _public(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj) if f.repr}


@dataclass(frozen=True)
class Op:
    action: str                        # add | change | remove
    obj: object                        # the object to add/remove, or the new one for change
    old: object = None                 # change: the object it replaces

    def inverse(self) -> "Op":
        if self.action == "add":
            return Op("remove", self.obj)
        if self.action == "remove":
            return Op("add", self.obj)
        return Op("change", self.old, self.obj)

    def __str__(self) -> str:
        sign = {"add": "+", "remove": "-", "change": "~"}[self.action]
        return f"{sign} {self.action:<6} {describe(self.obj)}" + (
            f"  (was: {describe(self.old)})" if self.old is not None else "")

    def to_dict(self) -> dict:
        d = {"action": self.action, "kind": type(self.obj).__name__.lower(),
             "object": _public(self.obj)}
        if self.old is not None:
            d["old"] = _public(self.old)
        return d


def describe(obj) -> str:
    if isinstance(obj, Link):
        if obj.kind == "wireguard":
            extra = f"port {obj.listen_port} peer {obj.peer_public_key} endpoint {obj.endpoint}"
        else:
            extra = f"local {obj.local} remote {obj.remote}" + (
                f" key {obj.gre_key}" if obj.gre_key is not None else "")
        return f"link {obj.name} {obj.kind} mtu {obj.mtu} {extra}"
    if isinstance(obj, Address):
        return f"address {obj.local} peer {obj.peer} dev {obj.dev}"
    if isinstance(obj, Route):
        if obj.type != "unicast":
            return (f"route -{obj.family} {obj.type} {obj.dst} table {obj.table}"
                    f" metric {obj.metric} proto {names.RTPROT_ARGOCTL}")
        return (f"route -{obj.family} {obj.dst} dev {obj.dev} table {obj.table}"
                f" proto {names.RTPROT_ARGOCTL}")
    if isinstance(obj, Rule) and obj.action == "blackhole":
        return f"rule -{obj.family} priority {obj.priority} not fwmark 0x0/{obj.mask:#x} blackhole"
    if isinstance(obj, Rule):
        table = "main" if obj.table == 254 else obj.table
        return (f"rule -{obj.family} priority {obj.priority} fwmark {obj.mark:#x}/{obj.mask:#x}"
                f" lookup {table}")
    if isinstance(obj, Sysctl):
        return f"sysctl {obj.path.replace('/', '.')}={obj.value}"
    if isinstance(obj, Nft):
        rules = ", ".join(f"{c}: {n}" for c, n in obj.chains)
        return f"nft table {names.NFT_FAMILY} {names.NFT_TABLE} ({rules}) digest {obj.digest[:12]}"
    return repr(obj)


# ---------------------------------------------------------------------------- desired

def _family(addr) -> int:
    return ipaddress.ip_address(addr).version


def _endpoint(peer: Peer) -> str:
    host = str(peer.address)
    return f"[{host}]:{peer.port}" if peer.address.version == 6 else f"{host}:{peer.port}"


def tunnel_mtu(peer: Peer, underlay_mtu: int) -> int:
    if peer.mtu:
        return peer.mtu
    overhead = OVERHEAD[(peer.tunnel, peer.address.version)]
    if peer.tunnel == "gre" and peer.gre_key is not None:
        overhead += GRE_KEY_BYTES
    return underlay_mtu - overhead


def _link(config: Config, peer: Peer, env: Env, private: Optional[bytes]) -> Link:
    name = names.link_name(peer.name)
    if peer.mtu:
        mtu = peer.mtu
    else:
        mtu = tunnel_mtu(peer, env.underlay_mtu(peer.address))
    if peer.tunnel == "gre":
        return Link(name=name, kind="gre" if peer.address.version == 4 else "ip6gre", mtu=mtu,
                    local=str(config.node.address), remote=str(peer.address),
                    gre_key=peer.gre_key, ttl=GRE_TTL)
    return Link(name=name, kind="wireguard", mtu=mtu, listen_port=peer.listen_port,
                public_key=env.public_key(private), peer_public_key=peer.public_key,
                endpoint=_endpoint(peer) if peer.port else None, keepalive=WG_KEEPALIVE,
                allowed_ips=WG_ALLOWED_IPS, private_key=private)


def desired(config: Config, env: Env) -> State:
    """The kernel state `config` asks for on this host."""
    r = config.routing
    private = None
    if any(p.tunnel == "wireguard" for p in config.peers):
        if not config.node.private_key_file:
            raise PlanError(f"{config.path}: WireGuard peers need node.private_key_file")
        private = env.private_key(config.node.private_key_file)
    links, sysctls, addresses, routes, rules = [], [], [], [], []
    for family in (4, 6):
        rules.append(Rule(family, r.priority(names.DIRECT_PATH_ID), r.mark(names.DIRECT_PATH_ID),
                          r.fwmark_mask, r.table(names.DIRECT_PATH_ID)))
        if config.peers:    # a marked packet whose path rule is gone never reaches main
            rules.append(Rule(family, r.priority(names.DROP_RULE_OFFSET), 0, r.fwmark_mask, 0,
                              "blackhole"))
    for peer in config.peers:
        link = _link(config, peer, env, private)
        links.append(link)
        dev = link.name
        # promote_secondaries: replacing the tunnel address (add new, then remove old)
        # must never leave the device without one, which would flush our routes on it.
        sysctls += [Sysctl(f"net/ipv4/conf/{dev}/rp_filter", "2"),
                    Sysctl(f"net/ipv4/conf/{dev}/promote_secondaries", "1"),
                    # A relay forwards what the tunnel brings; a steering node forwards
                    # the replies to its LAN (input device's forwarding decides).
                    Sysctl(f"net/ipv4/conf/{dev}/forwarding",
                           "1" if config.node.relay or config.node.steer_interfaces else "0")]
        addresses.append(Address(dev, _family(config.node.tunnel_address),
                                 str(config.node.tunnel_address), str(peer.tunnel_address)))
        for family in (4, 6):
            routes.append(Route(family, r.table(peer.id), "default", dev))
            # The table ends in a drop: if the tunnel route goes (device deleted
            # behind our back), marked traffic is dropped here instead of falling
            # through to the main table and leaving directly with the client's
            # address. Only direct uses main.
            routes.append(Route(family, r.table(peer.id), "default", "", "blackhole",
                                names.DROP_METRIC))
            rules.append(Rule(family, r.priority(peer.id), r.mark(peer.id), r.fwmark_mask,
                              r.table(peer.id)))
    if config.node.relay:
        sysctls += [Sysctl(path, "1") for path in FORWARDING]
    return State(links=tuple(links), sysctls=tuple(sysctls), addresses=tuple(addresses),
                 routes=tuple(routes), rules=tuple(rules), nft=(nft_ruleset(config),))


# ---------------------------------------------------------------------------- diff

def _on(obj) -> Optional[str]:
    """The link an object lives on (a link: itself)."""
    if isinstance(obj, Link):
        return obj.name
    if isinstance(obj, (Address, Route)):
        return obj.dev
    if isinstance(obj, Sysctl):
        return obj.dev
    return None


def diff(current: State, desired: State) -> list[Op]:
    """Ordered ops turning `current` into `desired`: removals first (most dependent
    kind first), then adds/changes (links before sysctls, addresses, routes, rules, nft)."""
    cur_links = {l.key: l for l in current.links}
    want_links = {l.key for l in desired.links}
    recreated = set()    # links replaced by remove+add: everything on them vanishes with them
    for link in desired.links:
        old = cur_links.get(link.key)
        if old is not None and link.needs_recreate(old):
            recreated.add(link.name)
    removals, changes = [], []
    for kind in KINDS:
        cur = {o.key: o for o in current.objects(kind)}
        want = {o.key: o for o in desired.objects(kind)}
        kind_removals, kind_changes = [], []
        late = []            # address removals on links that stay: after the adds
        for key, obj in cur.items():
            # Objects on a removed or recreated link get explicit removals (before the
            # link's), so the journal can put them back if a later step fails.
            if key not in want or _on(obj) in recreated:
                if kind is Address and _on(obj) in want_links and _on(obj) not in recreated:
                    late.append(Op("remove", obj))   # make-before-break: see promote_secondaries
                else:
                    kind_removals.append(Op("remove", obj))
        for key, obj in want.items():
            old = cur.get(key)
            if old is None or _on(obj) in recreated:
                kind_changes.append(Op("add", obj))
            elif old != obj:
                kind_changes.append(Op("change", obj, old))
        kind_changes += late
        removals.append(kind_removals)
        changes.append(kind_changes)
    ops = [op for group in reversed(removals) for op in group]
    ops += [op for group in changes for op in group]
    # Global forwarding goes on last, after the tunnels and rules are in place.
    last = [op for op in ops if op.action != "remove" and isinstance(op.obj, Sysctl)
            and op.obj.path in GLOBAL_SYSCTLS]
    return [op for op in ops if op not in last] + last
