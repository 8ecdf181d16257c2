"""The standard lab's per-host argoctl configs, from one description of the lab.

The lab (namespaces built by `argoctl lab`, or VMs built by vagrant/Vagrantfile):

    client --LAN 198.51.100.0/25-- edge ==== relay1, relay2 ==== origin (203.0.113.0/24)

edge, relay1, relay2 and origin are joined by a full mesh of underlay links, so
every relay path and the direct path exist. Each of those nodes has one underlay
address in 192.0.2.0/24 (on its loopback, routed over the mesh) that tunnels are
sourced from, and argoctl hosts have one overlay address from 198.51.100.128/25.
edge steers its LAN towards origin over direct, relay1 or relay2; the relays
only forward; origin runs `argoctl responder` on 203.0.113.10:7447.

Key material: WireGuard key pairs and the responder's shared MAC key are random,
or derived from a lab seed (HMAC-SHA256) so that VMs provisioned one at a time
agree on each other's public keys without copying secrets between them. Files
that already exist are reused, so regenerating gives the same configs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, replace
from typing import Optional, Union

from argoctl import keys
from argoctl.lab import topo as netns_topo

UNDERLAYS: tuple[str, ...] = ("netns", "vagrant")
TUNNEL_KINDS: tuple[str, ...] = ("gre", "wireguard")

WG_PORT_BASE = 51820     # our listen port for peer P is WG_PORT_BASE + P's index in the lab
RESPONDER_PORT = 7447
RESPONDER_KEY = "responder.key"
KEY_DIR = "keys"


@dataclass(frozen=True)
class LabHost:
    """One argoctl host of the lab."""
    name: str
    address: str                          # underlay address (tunnel endpoint)
    tunnel_address: str                   # overlay address on every tunnel device
    lan_interface: Optional[str] = None   # LAN-facing interface whose ingress is steered
    relay: bool = False                   # forwards traffic arriving through tunnels


@dataclass(frozen=True)
class LabTopology:
    """What the configs depend on: the argoctl hosts and the origin they reach."""
    edge: LabHost
    relays: tuple[LabHost, ...]
    origin_prefixes: tuple[str, ...]
    origin_target: str                    # the host in the origin prefix running the responder
    origin_name: str = "origin"
    responder_port: int = RESPONDER_PORT
    # Extra [policy] settings for the edge, e.g. (("probe_interval_ms", 100),)
    # for a lab that must fail over quickly.
    policy: tuple[tuple[str, Union[int, float, bool, str]], ...] = ()
    # A fleet lab (argoctl/lab/fleet.py): more edges like `edge`, relays that
    # probe the origin themselves (their direct leg is what the edges compose
    # with), relays that peer nobody (stand-in paths: no tunnels on relays),
    # and a [fleet] section for every host (its credentials_file per host).
    more_edges: tuple[LabHost, ...] = ()
    relays_probe: bool = False
    relays_peer: bool = True
    fleet: tuple[tuple[str, Union[int, float, bool, str, tuple]], ...] = ()
    # Per relay, the tunnel kind between it and the edges when not the lab's
    # `kind` (e.g. (("relay2", "wireguard"),) for relay1 over GRE, relay2 over WireGuard).
    tunnels: tuple[tuple[str, str], ...] = ()
    # More destinations served by the origin's host besides the first:
    # (name, prefixes, responder address), e.g. the fleet lab's other origins.
    more_destinations: tuple[tuple[str, tuple[str, ...], str], ...] = ()

    @property
    def edges(self) -> tuple[LabHost, ...]:
        return (self.edge, *self.more_edges)

    @property
    def hosts(self) -> tuple[LabHost, ...]:
        return (*self.edges, *self.relays)

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def kind_between(self, kind: str, a: str, b: str) -> str:
        """The tunnel kind between hosts a and b: the relay's own, else `kind`."""
        own = dict(self.tunnels)
        return own.get(a, own.get(b, kind))

    def uses(self, kind: str, tunnel: str) -> bool:
        """Whether any edge-relay tunnel is of kind `tunnel` (`kind`: the default)."""
        return any(self.kind_between(kind, r.name, self.edge.name) == tunnel
                   for r in self.relays)

    def index(self, name: str) -> int:
        """Stable small number per host (edge 0, relays 1..): the WireGuard port plan."""
        return [h.name for h in self.hosts].index(name)


# Underlay addresses and the origin come from the namespace lab's builder
# (argoctl/lab/topo.py); vagrant/Vagrantfile repeats them in Ruby and
# tests/unit/test_vagrant.py checks that it agrees. Overlay addresses are ours.
TUNNEL_ADDRESSES = {"edge": "198.51.100.129", "relay1": "198.51.100.130",
                    "relay2": "198.51.100.131"}
RELAYS = ("relay1", "relay2")
# The edge's client-facing interface: topo.py names it after the neighbour; in a
# VM the provider picks the name, so provisioning passes the real one
# (`--lan-interface`) and this is only the default.
LAN_INTERFACE = {"netns": "to-client", "vagrant": "eth1"}


def default_topology(underlay: str = "netns") -> LabTopology:
    """The standard lab. The Vagrant lab is IPv4-only; the namespace lab has IPv6 too."""
    if underlay not in UNDERLAYS:
        raise ValueError(f"unknown underlay {underlay!r} (one of {', '.join(UNDERLAYS)})")
    families = (0, 1) if underlay == "netns" else (0,)

    def host(name: str) -> LabHost:
        return LabHost(name, netns_topo.UNDERLAY[name][0], TUNNEL_ADDRESSES[name],
                       relay=name in RELAYS)

    lab = LabTopology(edge=host("edge"), relays=tuple(host(r) for r in RELAYS),
                      origin_prefixes=tuple(netns_topo.ORIGIN_PREFIX[f] for f in families),
                      origin_target=netns_topo.ORIGIN_SERVER[0])
    return with_lan_interface(lab, LAN_INTERFACE[underlay])


def with_lan_interface(topo: LabTopology, interface: str) -> LabTopology:
    """The same lab with the edge's LAN on `interface` (VM interface names vary by provider)."""
    return replace(topo, edge=replace(topo.edge, lan_interface=interface))


@dataclass(frozen=True)
class KeyFiles:
    """Where a host's secrets live (absolute paths written into configs)."""
    directory: str

    def private(self, host: str) -> str:
        return os.path.join(self.directory, f"{host}.key")

    def public(self, host: str) -> str:
        return os.path.join(self.directory, f"{host}.pub")

    @property
    def responder(self) -> str:
        return os.path.join(self.directory, RESPONDER_KEY)


def _q(value: str) -> str:
    """A TOML basic string (JSON's escaping is a subset TOML accepts)."""
    return json.dumps(value)


def _list(values) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return _list(v)
    return _q(v) if isinstance(v, str) else repr(v)


def _wireguard_ports(topo: LabTopology, me: str, peer: str) -> tuple[int, int]:
    """(our listen port for `peer`, `peer`'s listen port for us): each end
    listens on base + the other end's index, so both ends agree and every
    host's ports are distinct."""
    return WG_PORT_BASE + topo.index(peer), WG_PORT_BASE + topo.index(me)


def _peers_of(topo: LabTopology, host: LabHost) -> tuple[LabHost, ...]:
    # an edge peers every relay; a relay peers the edges (the far ends of their tunnels)
    if host in topo.edges:
        return topo.relays
    return topo.edges if topo.relays_peer else ()


def _check_kinds(topo: LabTopology, kind: str) -> None:
    for k in (kind, *dict(topo.tunnels).values()):
        if k not in TUNNEL_KINDS:
            raise ValueError(f"unknown tunnel kind {k!r} (one of {', '.join(TUNNEL_KINDS)})")


def render_config(topo: LabTopology, host_name: str, kind: str, key_files: KeyFiles,
                  public_keys: Optional[dict[str, str]] = None,
                  credentials: Optional[dict[str, str]] = None) -> str:
    """The TOML text of `host_name`'s config. `public_keys` (host -> base64) is
    needed for WireGuard, `credentials` (host -> NATS credentials file) for a
    lab with [fleet]. Deterministic: same inputs, same bytes."""
    _check_kinds(topo, kind)
    host = topo.host(host_name)
    kinds = {p.name: topo.kind_between(kind, host.name, p.name) for p in _peers_of(topo, host)}
    wg = "wireguard" in kinds.values()
    edge = host in topo.edges
    role = "edge: steers its LAN towards the origin" if edge \
        else "relay: forwards what arrives through its tunnels"
    out = [
        f"# argoctl lab host {host.name} ({role}).",
        f"# Generated by `argoctl lab gen-configs --tunnel {kind}`; regenerate rather than edit."
        if not topo.tunnels else "# Generated by argoctl's lab; regenerate rather than edit.",
        "",
        "[node]",
        f"name = {_q(host.name)}",
        f"address = {_q(host.address)}  # underlay: tunnels start here",
        f"tunnel_address = {_q(host.tunnel_address)}  # overlay address on every ag-* device",
    ]
    if host.lan_interface and edge:
        out.append(f"steer_interfaces = {_list([host.lan_interface])}  # client LAN")
    if wg:
        out.append(f"private_key_file = {_q(key_files.private(host.name))}")
    out.append(f"relay = {'true' if host.relay else 'false'}")
    for peer in _peers_of(topo, host):
        out += ["", "[[peer]]",
                f"name = {_q(peer.name)}",
                f"address = {_q(peer.address)}",
                f"tunnel = {_q(kinds[peer.name])}",
                f"tunnel_address = {_q(peer.tunnel_address)}"]
        if kinds[peer.name] == "wireguard":
            if not public_keys or peer.name not in public_keys:
                raise ValueError(f"no WireGuard public key for {peer.name}")
            ours, theirs = _wireguard_ports(topo, host.name, peer.name)
            out += [f"public_key = {_q(public_keys[peer.name])}",
                    f"port = {theirs}  # {peer.name} listens here for {host.name}",
                    f"listen_port = {ours}  # {host.name} listens here for {peer.name}"]
    if edge or topo.relays_probe:
        paths = ["direct", *(r.name for r in topo.relays)] if edge else ["direct"]
        for name, prefixes, target in ((topo.origin_name, topo.origin_prefixes,
                                        topo.origin_target), *topo.more_destinations):
            out += ["", "[[destination]]",
                    f"name = {_q(name)}",
                    f"prefixes = {_list(prefixes)}",
                    f"paths = {_list(paths)}  # preference order when measurements tie",
                    f"probe = {{ kind = \"udp\", target = {_q(target)}, "
                    f"port = {topo.responder_port} }}  # argoctl responder on the origin"]
        out += ["",
                "[policy]",
                "# The responder authenticates probes with this shared key (same file on origin).",
                f"responder_key_file = {_q(key_files.responder)}"]
        out += [f"{k} = {_value(v)}" for k, v in topo.policy]
    if topo.fleet:
        out += ["", "[fleet]"] + [f"{k} = {_value(v)}" for k, v in topo.fleet]
        if credentials and host.name in credentials:
            out.append(f"credentials_file = {_q(credentials[host.name])}")
    return "\n".join(out) + "\n"


# -- key material -------------------------------------------------------------

def _derive(seed: bytes, label: str) -> bytes:
    return hmac.new(seed, b"argoctl-lab:" + label.encode(), hashlib.sha256).digest()


def _seeded_private_key(seed: bytes, host: str) -> keys.SecretBytes:
    clamped = keys.clamp(_derive(seed, "wireguard:" + host))  # as `wg genkey` writes keys
    return keys.SecretBytes(clamped.to_bytes(keys.KEY_LEN, "little"))


def _write_secret(path: str, raw: bytes) -> None:
    """A base64 line, mode 0600 from the first byte."""
    keys.write_new_file(path, (keys.encode(raw) + "\n").encode(), 0o600, force=False)


def _ensure_private_key(path: str, seed: Optional[bytes], host: str) -> bytes:
    if os.path.exists(path):
        return keys.read_private_key(path)
    private = _seeded_private_key(seed, host) if seed is not None else keys.generate_private_key()
    _write_secret(path, private)
    return private


def _ensure_responder_key(path: str, seed: Optional[bytes]) -> None:
    if not os.path.exists(path):
        _write_secret(path, _derive(seed, "responder") if seed is not None else os.urandom(32))


def _no_key(name: str) -> ValueError:
    return ValueError(f"no WireGuard key for {name}: give a lab seed, "
                      "or generate every host's config together")


def _public_key_of(key_files: KeyFiles, name: str, seed: Optional[bytes], ours: bool) -> str:
    """A host's public key, from (in order) its private key file (created when
    we write that host), its .pub file, or the seed. Written to .pub if missing."""
    priv_path, pub_path = key_files.private(name), key_files.public(name)
    if ours or os.path.exists(priv_path):
        public = keys.encode(keys.public_key(_ensure_private_key(priv_path, seed, name)))
    elif os.path.exists(pub_path):
        with open(pub_path) as f:
            return f.read().strip()
    elif seed is not None:
        public = keys.encode(keys.public_key(_seeded_private_key(seed, name)))
    else:
        raise _no_key(name)
    if not os.path.exists(pub_path):
        with open(pub_path, "w") as f:
            f.write(public + "\n")
    return public


def read_seed(path: str) -> bytes:
    """A lab seed file: secret text of at least 16 bytes, mode 0600."""
    with open(path, "rb") as f:
        keys.check_key_file_mode(path, os.fstat(f.fileno()))
        seed = f.read().strip()
    if len(seed) < 16:
        raise ValueError(f"lab seed file {path} holds {len(seed)} bytes; need at least 16")
    return seed


def write_lab_configs(directory: str, topo: LabTopology, kind: str = "gre",
                      only: Optional[str] = None, seed: Optional[bytes] = None,
                      credentials: Optional[dict[str, str]] = None) -> dict[str, str]:
    """Write `<host>.toml` for every argoctl host (or only `only`; the origin
    gets just the responder key) plus keys/ under `directory`.
    Returns {host: config path}. Existing key files are reused, never replaced."""
    _check_kinds(topo, kind)
    names = [h.name for h in topo.hosts]
    if only is not None and only not in (*names, topo.origin_name):
        raise ValueError(f"unknown lab host {only!r} "
                         f"(one of {', '.join([*names, topo.origin_name])})")
    directory = os.path.abspath(directory)
    key_files = KeyFiles(os.path.join(directory, KEY_DIR))
    targets = names if only is None else [n for n in names if n == only]
    wg = topo.uses(kind, "wireguard")
    if wg and seed is None:
        # Refuse before writing anything: another host's key cannot be guessed.
        for n in names:
            if n not in targets and not any(
                    os.path.exists(p) for p in (key_files.private(n), key_files.public(n))):
                raise _no_key(n)
    os.makedirs(key_files.directory, mode=0o700, exist_ok=True)

    if only is None or only == topo.origin_name or only in (e.name for e in topo.edges):
        _ensure_responder_key(key_files.responder, seed)
    public_keys: dict[str, str] = {}
    if wg:
        public_keys = {n: _public_key_of(key_files, n, seed, ours=n in targets) for n in names}

    written = {}
    for name in targets:
        path = os.path.join(directory, f"{name}.toml")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(render_config(topo, name, kind, key_files, public_keys, credentials))
        os.replace(tmp, path)
        written[name] = path
    return written
