"""The peers argoctl is measured against, in the standard lab: babeld and BIRD.

Both run on the demo's topology (argoctl/topo.py `Topology.default`) over GRE:
every pair of mesh nodes (edge, relay1, relay2, origin) gets a GRE tunnel
`pe-<peer>` over their underlay link, so impairing an underlay link impairs
that tunnel exactly as it impairs argoctl's paths. Each tunnel pair i (in
`MESH_PAIRS` order) has 198.51.100.(192+4i)/30 (first node .193+4i, second
.194+4i), a fixed IPv6 link-local address (Babel speaks link-local IPv6) and
GRE key 100+i.

Routes: each daemon writes its routes into table PEER_TABLE, and every mesh node
looks the overlay prefixes (origin's 203.0.113.0/24, the client LAN
198.51.100.0/25) up there first (rules at PEER_RULE_PRIORITY). Client traffic
therefore follows the daemon's choice both ways (no NAT: the relays route);
with no route in the table, the lookup falls through to main (the underlay's
direct route), as argoctl falls back to direct.

- babeld: one per mesh node, `type tunnel` (timestamps, RTT penalty) on every
  tunnel; origin announces 203.0.113.0/24, edge the client LAN (routes read from
  IMPORT_TABLE, where we put them with proto static: nothing else is
  redistributed).
- BIRD 2 (bird-bfd): static routes protected by BFD. edge and origin have one
  route per next hop towards the other's prefix, ranked by preference (direct
  first, relay1, relay2); the relays have a BFD-protected route towards each
  end. BFD watches the next hop only.

Daemons run inside the lab's namespaces only (Host.popen: killed with the
topology), configs, logs and control sockets live in a private directory.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from dataclasses import dataclass

from argoctl.lab import topo as netns_topo

SYSTEMS = ("babeld", "bird-bfd")
SETTINGS = ("fast", "default")
NODES = ("edge", "relay1", "relay2", "origin")
RELAYS = ("relay1", "relay2")
# babeld 1.12 passes the table in the 8-bit rtm_table only (7310 would become 142):
# both tables stay below 256.
PEER_TABLE = 173            # routes the daemons write (rules send overlay traffic here)
IMPORT_TABLE = 174          # what babeld announces (read with import-table; never looked up)
PEER_RULE_PRIORITY = 7310
GRE_KEY_BASE = 100
TUNNEL_NET = ipaddress.ip_network("198.51.100.192/26")
OVERLAY = {"origin": netns_topo.ORIGIN_PREFIX[0], "edge": netns_topo.CLIENT_LAN[0]}
BABEL_PROTO = 42            # RTPROT_BABEL
BIRD_PROTO = 12             # RTPROT_BIRD
# babeld: the shortest hello interval its documentation calls sane is about 100 ms
# (centisecond wire units); defaults: 4 s hellos, 4 s smoothing half-life.
BABEL_FAST = {"hello-interval": "0.1", "smoothing-half-life": "1"}
# Above one hop's cost (rxcost 96): a 200 ms direct path then costs more than
# a two-hop detour of 10 ms hops, so the RTT can move traffic at all (at the
# default 96 a slow direct path ties the detour and babeld keeps it).
BABEL_MAX_RTT_PENALTY = 192
# BIRD: 50 ms x 3 (150 ms), and BIRD's defaults (no options: min rx 10 ms,
# min tx 100 ms, multiplier 5: 500 ms).
BFD_FAST = {"interval": "50 ms", "multiplier": "3"}
# Static route preference per next hop: direct first, then the relays by
# their distance (relay1 is the nearer).
BIRD_PREFERENCE = {"direct": 250, "relay1": 200, "relay2": 150}


class PeerError(RuntimeError):
    pass


def tunnel_name(peer: str) -> str:
    return f"pe-{peer}"


@dataclass(frozen=True)
class Tunnel:
    """One end of a peer GRE tunnel: on `node`, towards `peer`."""
    node: str
    peer: str
    index: int              # MESH_PAIRS position
    address: str            # ours on the /30
    peer_address: str       # theirs

    @property
    def ifname(self) -> str:
        return tunnel_name(self.peer)

    @property
    def link_local(self) -> str:
        return f"fe80::{ipaddress.ip_address(self.address).packed[3]}"


def tunnels(node: str) -> list[Tunnel]:
    """`node`'s tunnels, in MESH_PAIRS order."""
    out = []
    for i, (a, b) in enumerate(netns_topo.MESH_PAIRS):
        if node not in (a, b):
            continue
        first = TUNNEL_NET.network_address + 4 * i + 1
        mine, theirs = (first, first + 1) if node == a else (first + 1, first)
        out.append(Tunnel(node, b if node == a else a, i, str(mine), str(theirs)))
    return out


def tunnel_to(node: str, peer: str) -> Tunnel:
    return next(t for t in tunnels(node) if t.peer == peer)


def mesh_commands(node: str) -> list[str]:
    """`ip -batch` lines: node's GRE tunnels, their addresses, the overlay rules."""
    under = netns_topo.UNDERLAY
    lines = []
    for t in tunnels(node):
        lines += [f"link add {t.ifname} type gre local {under[node][0]} remote {under[t.peer][0]} "
                  f"key {GRE_KEY_BASE + t.index} ttl 64",
                  f"link set {t.ifname} multicast on",
                  f"address add {t.address}/30 dev {t.ifname}",
                  f"address add {t.link_local}/64 dev {t.ifname}",
                  f"link set {t.ifname} up"]
    for i, prefix in enumerate(OVERLAY.values()):
        lines.append(f"rule add to {prefix} lookup {PEER_TABLE} priority {PEER_RULE_PRIORITY + i}")
    return lines


# -- babeld -----------------------------------------------------------------------

def babeld_conf(node: str, setting: str, directory: str) -> str:
    """babeld.conf for `node` (see babeld(8))."""
    if setting not in SETTINGS:
        raise ValueError(f"setting {setting!r}: one of {', '.join(SETTINGS)}")
    fast = setting == "fast"
    out = [f"# argoctl bench peers: babeld on {node}, {setting}",
           "skip-kernel-setup true",          # the lab sets forwarding/rp_filter itself
           f"export-table {PEER_TABLE}",
           f"import-table {IMPORT_TABLE}",
           f"state-file {directory}/babeld-{node}.state",
           f"pid-file {directory}/babeld-{node}.pid"]
    if fast:
        out.append(f"smoothing-half-life {BABEL_FAST['smoothing-half-life']}")
    iface = ["type tunnel", "enable-timestamps true", f"max-rtt-penalty {BABEL_MAX_RTT_PENALTY}"]
    if fast:
        iface.append(f"hello-interval {BABEL_FAST['hello-interval']}")
    out += [f"interface {t.ifname} {' '.join(iface)}" for t in tunnels(node)]
    if node in OVERLAY:
        out.append(f"redistribute ip {OVERLAY[node]} eq "
                   f"{ipaddress.ip_network(OVERLAY[node]).prefixlen} proto 4 allow")
    out.append("redistribute local deny")   # only the prefix above, no addresses
    return "\n".join(out) + "\n"


def babeld_announce_commands(node: str) -> list[str]:
    """What `node` announces, as a static route in IMPORT_TABLE (never looked up)."""
    if node not in OVERLAY:
        return []
    dev = "lo" if node == "origin" else "to-client"
    return [f"route add {OVERLAY[node]} dev {dev} proto static table {IMPORT_TABLE}"]


# -- BIRD ---------------------------------------------------------------------------

def _bird_statics(node: str) -> list[tuple[str, str, str]]:
    """(name, prefix, next hop) for node's BFD-protected static routes."""
    if node in RELAYS:
        return [(f"to_{end}", OVERLAY[end], tunnel_to(node, end).peer_address)
                for end in ("origin", "edge")]
    far = "origin" if node == "edge" else "edge"
    return [(f"via_{hop}", OVERLAY[far],
             tunnel_to(node, far if hop == "direct" else hop).peer_address)
            for hop in ("direct", *RELAYS)]


def bird_conf(node: str, setting: str, directory: str) -> str:
    """bird.conf for `node` (BIRD 2 user's guide: static, bfd, kernel protocols)."""
    if setting not in SETTINGS:
        raise ValueError(f"setting {setting!r}: one of {', '.join(SETTINGS)}")
    out = [f"# argoctl bench peers: BIRD static routes with BFD on {node}, {setting}",
           f"router id {netns_topo.UNDERLAY[node][0]};",
           f'log "{directory}/bird-{node}.log" all;',
           "protocol device { scan time 10; }"]
    if setting == "fast":
        opts = "; ".join(f"{k} {v}" for k, v in BFD_FAST.items())
        out.append(f'protocol bfd {{ interface "pe-*" {{ {opts}; }}; }}')
    else:
        out.append("protocol bfd { }")
    out.append(f"protocol kernel {{ ipv4 {{ import none; export all; }}; "
               f"kernel table {PEER_TABLE}; }}")
    for name, prefix, via in _bird_statics(node):
        hop = name.split("_", 1)[1]
        pref = f" preference {BIRD_PREFERENCE[hop]};" if hop in BIRD_PREFERENCE else ""
        out.append(f"protocol static {name} {{ ipv4 {{{pref} }}; "
                   f"route {prefix} via {via} bfd; }}")
    return "\n".join(out) + "\n"


# -- running them -------------------------------------------------------------------

class PeerMesh:
    """babeld or BIRD on every mesh node of a started standard lab, over GRE.

    start() builds the tunnels and rules and starts the daemons; stop() ends the
    daemons and removes the tunnels, rules and routes (the lab itself stays)."""

    def __init__(self, topo, system: str, setting: str, directory: str):
        if system not in SYSTEMS:
            raise ValueError(f"system {system!r}: one of {', '.join(SYSTEMS)}")
        if setting not in SETTINGS:
            raise ValueError(f"setting {setting!r}: one of {', '.join(SETTINGS)}")
        self.topo, self.system, self.setting, self.directory = topo, system, setting, directory
        self.procs: dict[str, subprocess.Popen] = {}
        self._built: list[str] = []

    @property
    def proto(self) -> int:
        return BABEL_PROTO if self.system == "babeld" else BIRD_PROTO

    def start(self) -> "PeerMesh":
        try:
            for node in NODES:
                host = self.topo[node]
                lines = mesh_commands(node)
                if self.system == "babeld":
                    lines += babeld_announce_commands(node)
                self._built.append(node)
                _ip_batch(host, lines)
            for node in NODES:
                self.procs[node] = self._start_daemon(node)
            time.sleep(0.5)
            self.check_running()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_daemon(self, node: str) -> subprocess.Popen:
        host = self.topo[node]
        log = open(os.path.join(self.directory, f"{self.system}-{node}.out"), "ab")
        with log:
            if self.system == "babeld":
                conf = os.path.join(self.directory, f"babeld-{node}.conf")
                with open(conf, "w") as f:
                    f.write(babeld_conf(node, self.setting, self.directory))
                return host.popen(["babeld", "-c", conf], stdout=log, stderr=subprocess.STDOUT)
            conf = os.path.join(self.directory, f"bird-{node}.conf")
            with open(conf, "w") as f:
                f.write(bird_conf(node, self.setting, self.directory))
            return host.popen(["bird", "-f", "-c", conf,
                               "-s", os.path.join(self.directory, f"bird-{node}.ctl"),
                               "-P", os.path.join(self.directory, f"bird-{node}.pid")],
                              stdout=log, stderr=subprocess.STDOUT)

    def output(self, node: str) -> str:
        """What the daemon on `node` printed (and BIRD's log)."""
        text = ""
        for name in (f"{self.system}-{node}.out", f"bird-{node}.log"):
            try:
                with open(os.path.join(self.directory, name), errors="replace") as f:
                    text += f.read()
            except FileNotFoundError:
                pass
        return text

    def check_running(self) -> None:
        for node, proc in self.procs.items():
            if proc.poll() is not None:
                raise PeerError(f"{self.system} on {node} exited ({proc.returncode}): "
                                f"{self.output(node).strip()[-800:]}")

    def routes(self, node: str) -> list[str]:
        """The daemon's routes in `node`'s PEER_TABLE (`ip route` lines)."""
        out = self.topo[node].run(["ip", "-4", "route", "show", "table", str(PEER_TABLE),
                                   "proto", str(self.proto)]).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def routed(self) -> bool:
        """edge has a route to origin's prefix and origin one back, from the daemon."""
        return all(any(r.startswith(OVERLAY[far]) for r in self.routes(node))
                   for node, far in (("edge", "origin"), ("origin", "edge")))

    def restart(self) -> None:
        """The daemons ended and started again on the standing mesh, their routes
        flushed in between: what they knew of the last scenario is gone."""
        self._end_daemons()
        for node in self._built:
            self.topo[node].run(["ip", "route", "flush", "table", str(PEER_TABLE)])
        for node in NODES:
            self.procs[node] = self._start_daemon(node)
        time.sleep(0.5)
        self.check_running()

    def _end_daemons(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def stop(self) -> None:
        """Daemons ended (SIGTERM, then SIGKILL), tunnels, rules and routes removed."""
        self._end_daemons()
        for node in self._built:
            host = self.topo[node]
            lines = [f"link del {t.ifname}" for t in tunnels(node)]
            lines += [f"rule del priority {PEER_RULE_PRIORITY + i}" for i in range(len(OVERLAY))]
            lines += [f"route flush table {t}" for t in (PEER_TABLE, IMPORT_TABLE)]
            for line in lines:      # one at a time: a missing object must not stop the rest
                host.run(["ip", *line.split()])
        self._built.clear()


def _ip_batch(host, lines: list[str]) -> None:
    proc = host.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")
    if proc.returncode:
        raise PeerError(f"{host.name}: ip -batch: {proc.stderr.strip()}")
