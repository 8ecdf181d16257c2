"""The loader: TOML file -> validated Config, or ConfigError with every problem
(file:line, hint). One pass over the tomllib document collects every problem."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import fields
from typing import Any, Optional

from argoctl import keys, mac, names
from argoctl.tomlpos import Locator
from argoctl.config.fleet import check_fleet

from argoctl.config.keyfiles import KeyFileChecks

from argoctl.config.model import *  # noqa: F401,F403
from argoctl.config.model import IPAddress, IPNetwork
from argoctl.config.rules import *  # noqa: F401,F403
from argoctl.config.rules import (_DEST_KEYS, _KIND_NAMES, _NAME_RE, _NODE_KEYS, _PEER_KEYS, _POLICY_RULES,
                                   _PROBE_KEYS, _TABLES, _WG_KEYS, Path, _describe, _did_you_mean, _ifname_problem,
                                   _is_kind, _label, _listen_problem, _overlapping, _syntax_problem, _where)


def load(path: str) -> Config:
    """Parse and validate a config file; raise ConfigError listing every problem.

    Pure: reads the file (and the key files it names), changes nothing."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError([Problem(path, 1, f"cannot read config file: {e.strerror}")]) from None
    return check(path, data)



class _Checker(KeyFileChecks):
    def __init__(self, file: str, text: str):
        self.file = file
        self.loc = Locator(text)
        self.base_dir = os.path.dirname(os.path.abspath(file))
        self.problems: list[Problem] = []
        self.notes: list[str] = []     # not problems: what up/run will do (files they create)

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
        self.limits(doc, policy, destinations)
        fleet = check_fleet(self, doc)
        if self.problems or node is None:
            return None
        return Config(path=self.file, node=node, peers=tuple(p for _, p in peers),
                      destinations=tuple(destinations), routing=routing, policy=policy,
                      fleet=fleet, notes=tuple(self.notes))

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
                    private_key_file=(self.resolve(key_file) if "\0" not in key_file
                                      else key_file) if key_file else None,
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
                if pid > names.MAX_PATH_ID:      # more peers than the id space holds
                    self.err(p, f"[[peer]] number {pid} gets the default id {pid}, but path "
                             f"ids end at {names.MAX_PATH_ID}",
                             f"at most {names.MAX_PATH_ID} peers; set explicit ids 1.."
                             f"{names.MAX_PATH_ID}")
                    pid = None
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
        # Checked written or defaulted: a default can still clash with the ids
        # (or with a mask written beside it).
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
        pp = p + ("rule_priority_base",)
        if pb < 1:
            self.err(pp, f"routing.rule_priority_base: {pb} must be at least 1",
                     "priority 0 is the kernel's local-table rule")
        elif pb + max_id >= MAIN_RULE_PRIORITY:
            self.err(pp, f"routing.rule_priority_base: {pb} + peer id {max_id} reaches "
                     f"{pb + max_id}, at or after the main-table rule ({MAIN_RULE_PRIORITY})",
                     f"rules after {MAIN_RULE_PRIORITY} never match; e.g. 7200")
        mp = p + ("fwmark_mask",)
        if not 0 < mask <= 0xFFFFFFFF:
            self.err(mp, f"routing.fwmark_mask: {mask:#x} must be a non-zero 32-bit value",
                     "e.g. 0x000000ff")
        else:
            field_max = mask >> names.mark_shift(mask)
            if field_max & (field_max + 1):
                self.err(mp, f"routing.fwmark_mask: {mask:#010x} is not one contiguous run "
                         "of bits", "e.g. 0x000000ff")
            elif field_max <= max_id:
                need = max_id.bit_length() + (1 if (max_id + 1) & max_id == 0 else 0)
                self.err(mp, f"routing.fwmark_mask: {mask:#010x} holds values up to "
                         f"{field_max}, too narrow for peer id {max_id} plus the all-ones "
                         "value of the direct path",
                         f"use at least {need} bits, e.g. 0x000000ff")
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
        if "probe_timeout_ms" not in values and "probe_timeout_ms" not in t:
            # The default timeout follows the interval: at most the detection time
            # (interval x multiplier), so a fast interval never gets a timeout that
            # outlasts it.
            pol = Policy(**values)
            values["probe_timeout_ms"] = min(pol.probe_timeout_ms,
                                             pol.probe_interval_ms * pol.detect_multiplier)
        pol = Policy(**values)
        if pol.probe_timeout_ms > pol.probe_interval_ms * pol.detect_multiplier:
            # written or defaulted: point at the first of the three that was written
            at = next((k for k in ("probe_timeout_ms", "probe_interval_ms", "detect_multiplier")
                       if k in t), None)
            told = ""
            self.err(p + ((at,) if at else ()), f"policy.probe_timeout_ms: "
                     f"{pol.probe_timeout_ms}{told} exceeds probe_interval_ms x "
                     f"detect_multiplier ({pol.probe_interval_ms * pol.detect_multiplier})",
                     "a path would be declared down before its probe times out; set "
                     "probe_timeout_ms <= probe_interval_ms x detect_multiplier")
        if "metrics_listen" in values and values["metrics_listen"]:
            problem = _listen_problem(values["metrics_listen"])
            if problem:
                self.err(p + ("metrics_listen",), f"policy.metrics_listen: "
                         f"{values['metrics_listen']!r} {problem}",
                         "host:port with an IP literal, e.g. 127.0.0.1:9474 or [::1]:9474; "
                         "\"\" disables the exporter")
        if values.get("responder_key_file"):
            path = self.resolve(values["responder_key_file"]) \
                if "\0" not in values["responder_key_file"] else values["responder_key_file"]
            pol = Policy(**{**values, "responder_key_file": path})
            self.secret_file(p + ("responder_key_file",), path)
        return pol

    def limits(self, doc: dict, pol: Policy, dests: list[Destination]) -> None:
        """What run needs beyond single values: the probe key for udp probes, and
        the datapath's map sizes."""
        if not pol.responder_key_file:
            for i, d in enumerate(dests):
                if d.probe is not None and d.probe.kind == "udp":
                    self.err(("destination", i, "probe"), f"destination {d.name!r}: udp probes "
                             "need policy.responder_key_file (the key the responders share)",
                             "add responder_key_file = \"probe.key\" under [policy] (create it "
                             "with `argoctl responder --genkey`), or probe with icmp or tcp")
                    break
        if len(dests) > MAX_DESTINATIONS:
            self.err(("destination", MAX_DESTINATIONS), f"{len(dests)} destinations, the datapath "
                     f"holds at most {MAX_DESTINATIONS}")
        for version, limit in ((4, MAX_PREFIXES_V4), (6, MAX_PREFIXES_V6)):
            n = sum(1 for d in dests for net in d.prefixes if net.version == version)
            if n > limit:
                self.err(("destination",), f"{n} IPv{version} prefixes, the datapath holds at "
                         f"most {limit}")


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
