"""The fleet lab: N argoctl hosts in network namespaces on the host kernel, one
real daemon each (a thread of this process, as in argoctl/lab/loop.py), sharing
what they measure through a nats-server the lab starts in its own namespace.

    with FleetLab("fl1", directory, edges=9, relays=3).start() as lab:
        lab.daemons["e1"].fleet.mode        # "fleet"
        lab.streams                          # each client's UDP stream to the origin
        lab.connectors                       # each client's TCP connections to it
        lab.sink.first_from({"to-r3"}, t0)   # per client: first datagram via r3

Hosts (namespaces `<prefix>-<host>`):

    e1..eE   edges: steer their client's LAN (to-cI) towards the origin over
             direct or any relay; clients c1..cE, one per edge, default via it
    r1..rR   relays: forward to the origin; probe it themselves (their direct
             leg is what the edges compose with); no tunnels
    origin   the responder (203.0.113.10:7447) and a sink noting, per datagram,
             its source and the interface it arrived on (to-eI: direct, to-rJ: via rJ);
             a TCP server (203.0.113.10:9001) each client opens `tcp_rate` new
             connections a second to (real traffic: the edges' datapaths count its
             SYNs and SYN-ACKs per path, the passive evidence of fleet mode's
             demand mode and of a failing choice)
    bus      nats-server (argoctl/lab/nats.py), linked to every argoctl host

Paths are stand-ins (loop.fake_paths): an edge's path to relay J is its fwmark
rule and table routing everything to rJ's link; rJ forwards to the origin, which
answers straight to the edge. Every link is a /31 from 192.0.2.128/25 (at most
64 links: edges x (relays + 1) + relays + edges + relays); underlay addresses
192.0.2.K on lo (K = 1.. over edges then relays), origin 192.0.2.120, bus
192.0.2.121; client LAN I 198.51.100.4(I-1)/30; tunnel addresses
198.51.100.(128+K) on each relay's lo, so the edges' tunnel legs (ICMP through
the relay's mark) are answered. stop() removes everything, also after a failure
half-way through start().
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from argoctl.lab import configs as labconfig
from argoctl.lab import loop
from argoctl.lab import topo as netns_topo

ORIGIN_LOOPBACK = "192.0.2.120"
BUS_LOOPBACK = "192.0.2.121"
LINK_POOL = ipaddress.ip_network("192.0.2.128/25")
# 1 s probes (the fleet: a few probes a second per host, not per path)
POLICY = {"probe_interval_ms": 1000, "detect_multiplier": 3, "probe_timeout_ms": 800,
          "hold_down_s": 2.0, "recover_probes": 3}
# Publish every 500 ms; k = 1: an edge probes direct plus one relay end to end and
# composes the others from the bus (so Orpheus across the fleet is what moves it);
# the default TTL (15 s), so slow checks run at rates.py's pace 7, as in a fleet
FLEET = {"publish_interval_ms": 500, "ttl_s": 15, "alternatives": 1}
STREAM_PPS = 20             # each client's UDP stream (one datagram per 50 ms)
TCP_RATE = 4                # each client's new TCP connections a second (0: none)
MAX_ORIGINS = 4             # destinations served by the origin's host (ORIGIN_PREFIX's /26s)
TCP_TIMEOUT_S = 2.0         # a connection not made in this long is given up (1 SYN retry)


def host_names(edges: int, relays: int) -> tuple[list[str], list[str]]:
    return [f"e{i}" for i in range(1, edges + 1)], [f"r{j}" for j in range(1, relays + 1)]


def origin_destinations(origins: int) -> list[tuple[str, tuple[str, ...], str]]:
    """(name, prefixes, responder address) of each destination the origin's host
    serves: one, the lab's usual origin; more: ORIGIN_PREFIX cut into /26s
    (destinations may not overlap), the first still holding ORIGIN_SERVER."""
    if not 1 <= origins <= MAX_ORIGINS:
        raise netns_topo.TopologyError(f"origins: {origins}, not 1..{MAX_ORIGINS}")
    if origins == 1:
        return [("origin", (netns_topo.ORIGIN_PREFIX[0],), netns_topo.ORIGIN_SERVER[0])]
    net = ipaddress.ip_network(netns_topo.ORIGIN_PREFIX[0])
    server = int(ipaddress.ip_address(netns_topo.ORIGIN_SERVER[0])) - int(net[0])
    return [("origin" if k == 0 else f"origin{k + 1}", (str(sub),), str(sub[server]))
            for k, sub in enumerate(list(net.subnets(new_prefix=26))[:origins])]


def fleet_topology(prefix: str, edges: int, relays: int,
                   origins: int = 1) -> netns_topo.Topology:
    """The lab's namespaces, links and routes (not started)."""
    es, rs = host_names(edges, relays)
    links = edges * (relays + 1) + relays + edges + relays
    if links > LINK_POOL.num_addresses // 2 or edges > 32 or edges + relays > 100:
        raise netns_topo.TopologyError(f"{edges} edges x {relays} relays: too many links "
                                       f"({links}) for {LINK_POOL}")
    t = netns_topo.Topology(prefix)
    for k, name in enumerate(es + rs, 1):
        t.add_host(name, loopback=f"192.0.2.{k}")
    origin = t.add_host("origin", loopback=ORIGIN_LOOPBACK)
    for _, _, server in origin_destinations(origins):
        t.add_address(origin, server)
    pool = LINK_POOL.subnets(new_prefix=31)

    def link(a, b):
        t.add_link(t[a], t[b], subnet=str(next(pool)))
        t.add_route(t[a], f"{t[b].loopback}/32", via=t[b])
        t.add_route(t[b], f"{t[a].loopback}/32", via=t[a])

    for r in rs:
        link(r, "origin")
        t.add_route(t[r], netns_topo.ORIGIN_PREFIX[0], via=origin)
    for i, e in enumerate(es):
        link(e, "origin")
        t.add_route(t[e], netns_topo.ORIGIN_PREFIX[0], via=origin)
        client = t.add_host(f"c{i + 1}")
        lan = f"198.51.100.{4 * i}/30"
        t.add_link(t[e], client, subnet=lan)
        t.add_route(client, "default", via=t[e])
        t.add_route(origin, lan, via=t[e])          # the origin answers straight to the edge
        for r in rs:
            link(e, r)
            t.add_route(t[r], lan, via=t[e])
    add_bus(t, es + rs, BUS_LOOPBACK, pool)
    return t


def add_bus(t: netns_topo.Topology, hosts, loopback: str, subnets) -> None:
    """Host "bus" (nats-server's namespace, `loopback` on its lo) linked to each
    of `hosts` over the next of `subnets`, each routing the other's loopback."""
    bus = t.add_host("bus", loopback=loopback)
    for h in hosts:
        t.add_link(t[h], bus, subnet=str(next(subnets)))
        t.add_route(t[h], f"{loopback}/32", via=bus)
        t.add_route(bus, f"{t[h].loopback}/32", via=t[h])


def lab_topology(edges: list[str], relays: list[str], policy: dict,
                 fleet: dict, origins: int = 1) -> labconfig.LabTopology:
    """What the configs say (argoctl/lab/configs.py): every edge steers its client LAN."""
    def host(k: int, name: str, lan: Optional[str] = None) -> labconfig.LabHost:
        return labconfig.LabHost(name, f"192.0.2.{k}", f"198.51.100.{128 + k}", lan,
                                 relay=lan is None)
    es = [host(k, e, f"to-c{k}") for k, e in enumerate(edges, 1)]
    rs = [host(k, r) for k, r in enumerate(relays, len(edges) + 1)]
    (name, prefixes, target), *more = origin_destinations(origins)
    return labconfig.LabTopology(
        edge=es[0], more_edges=tuple(es[1:]), relays=tuple(rs),
        origin_prefixes=prefixes, origin_target=target, origin_name=name,
        more_destinations=tuple(more), policy=tuple(policy.items()),
        relays_probe=True, relays_peer=False, fleet=tuple(fleet.items()))


@dataclass
class FleetLab:
    prefix: str
    directory: str
    edges: int = 9
    relays: int = 3
    policy: dict = field(default_factory=lambda: dict(POLICY))
    fleet: dict = field(default_factory=lambda: dict(FLEET))
    pps: float = STREAM_PPS
    tcp_rate: float = TCP_RATE
    # destinations the origin's host serves (origin_destinations): each client's
    # TCP connections take them in turn; its UDP stream goes to the first
    origins: int = 1
    topo: object = None
    nats: object = None
    configs: dict = field(default_factory=dict)
    daemons: dict = field(default_factory=dict)
    streams: dict = field(default_factory=dict)
    connectors: dict = field(default_factory=dict)
    tcp: object = None
    responder: object = None
    sink: object = None
    timings: dict = field(default_factory=dict)     # seconds per start-up phase
    _pins: dict = field(default_factory=dict)       # loop.compile_datapaths

    @property
    def edge_names(self) -> list[str]:
        return host_names(self.edges, self.relays)[0]

    @property
    def relay_names(self) -> list[str]:
        return host_names(self.edges, self.relays)[1]

    def run_dir(self, host: str) -> str:
        return os.path.join(self.directory, f"run-{host}")

    def client_of(self, edge: str) -> str:
        return f"c{self.edge_names.index(edge) + 1}"

    def client_address(self, edge: str) -> str:
        """The source address of `edge`'s client stream."""
        client = self.client_of(edge)
        return self.topo.link(edge, client).address(self.topo[client])

    def start(self, workers: int = 2) -> "FleetLab":
        """Namespaces, nats-server, configs, stand-in paths, origin, daemons,
        client streams and TCP connections. Each daemon's datapath is compiled first by its own
        process, `workers` at a time (bcc cannot compile in two threads of one
        process, and a compile is seconds): the daemons adopt them, as
        `argoctl run` adopts what `argoctl up` loaded."""
        from argoctl import config as cfgmod
        from argoctl import mac
        from argoctl.lab.nats import NatsFleet
        es, rs = self.edge_names, self.relay_names
        t0 = time.monotonic()
        try:
            self.topo = t = fleet_topology(self.prefix, self.edges, self.relays, self.origins)
            t.start()
            self._mark("namespaces", t0)
            workdir = os.path.join(self.directory, "nats")
            os.makedirs(workdir, mode=0o700, exist_ok=True)
            self.nats = NatsFleet(es + rs, ttl_s=self.fleet["ttl_s"], netns=t["bus"].netns,
                                  address=BUS_LOOPBACK, workdir=workdir)
            self.nats.start()
            self._mark("nats", t0)
            lt = lab_topology(es, rs, self.policy,
                              {"servers": tuple(self.nats.urls), **self.fleet}, self.origins)
            paths = labconfig.write_lab_configs(
                self.directory, lt, "gre",
                credentials={h: self.nats.credentials(h) for h in es + rs})
            self.configs = {h: cfgmod.load(p) for h, p in paths.items()}
            for e in es:
                loop.fake_paths(t, self.configs[e], edge=e)
            for r in rs:
                t.add_address(t[r], lt.host(r).tunnel_address)
            key = mac.read_key(self.configs[es[0]].policy.responder_key_file)
            self.responder = loop.ResponderThread(t["origin"], key)
            self.sink = loop.Sink(t["origin"])
            loop.compile_datapaths({h: t[h].netns for h in es + rs}, self._pins, workers)
            self._mark("datapaths", t0)
            for h in es + rs:
                self._daemon(h)
            self._mark("daemons", t0)
            for e in es:
                self.streams[e] = loop.Stream(t[self.client_of(e)], pps=self.pps)
            if self.tcp_rate > 0:
                self.tcp = loop.TcpServer(t["origin"])
                for e in es:
                    self.connectors[e] = loop.Connector(
                        t[self.client_of(e)], self.tcp_rate, timeout=TCP_TIMEOUT_S,
                        dst=tuple(d[2] for d in origin_destinations(self.origins)))
        except BaseException:
            self.stop()
            raise
        return self

    def _mark(self, phase: str, t0: float) -> None:
        self.timings[phase] = round(time.monotonic() - t0, 2)

    def _daemon(self, host: str):
        from argoctl.daemon import Daemon, Options
        opts = Options(ns=self.topo[host].netns, run_dir=self.run_dir(host), cgroup=None,
                       apply_config=False, metrics_listen="")
        d = Daemon(self.configs[host], opts)
        self.daemons[host] = d           # stopped by stop() even if start_thread fails
        return d.start_thread()

    def wait_for(self, pred, timeout: float, step: float = 0.1) -> bool:
        return loop.wait_for(pred, timeout, step)

    def connected(self, since: float) -> dict[str, float]:
        """Per edge: when its client's first TCP connection made after `since`
        completed (monotonic; the handshake answered at the origin)."""
        out = {}
        for e, c in self.connectors.items():
            done = [t + ok for t, ok in list(c.attempts) if ok is not None and t + ok > since]
            if done:
                out[e] = min(done)
        return out

    def restart_daemons(self, fleet: bool = True) -> None:
        """Every daemon stopped, then started again from configs with (`fleet`) or
        without a [fleet] section (fleet mode off: every host probes every path
        itself, no bus). The datapaths stay pinned: the new daemons adopt them,
        nothing is compiled again (seconds, not minutes)."""
        from argoctl import config as cfgmod
        es, rs = self.edge_names, self.relay_names
        settings = {"servers": tuple(self.nats.urls), **self.fleet} if fleet else {}
        creds = {h: self.nats.credentials(h) for h in es + rs} if fleet else None
        paths = labconfig.write_lab_configs(
            self.directory, lab_topology(es, rs, self.policy, settings, self.origins), "gre",
            credentials=creds)
        for h in es + rs:
            self.daemons.pop(h).stop()
        self.configs = {h: cfgmod.load(p) for h, p in paths.items()}
        for h in es + rs:
            self._daemon(h)

    def orpheus(self, timeout: float = 60, keep: bool = False) -> dict:
        """Orpheus measured: the origin made reachable only through the last relay
        (every edge's and every other relay's link to it blackholed at t0). Seconds
        after t0, per edge: when it chose that relay (`chose`), when its client's
        first new TCP connection completed (`tcp`: only through that relay can a
        handshake complete now) and when its UDP stream first arrived through it
        (`udp`); `moves` lists each edge's choices since t0 (a detour through a
        relay cut off too costs a second detection). `ok`: every edge got there
        within `timeout`. The blackholes are lifted before returning unless `keep`
        (then `lift` is the callable that lifts them)."""
        t, last = self.topo, self.relay_names[-1]
        # usually all on direct; an edge a loaded machine moved to a relay is cut off as well
        self.wait_for(lambda: set(self.choices().values()) == {"direct"}, 30)
        before = self.choices()
        broken = [(e, "origin") for e in self.edge_names] + \
            [(r, "origin") for r in self.relay_names if r != last]
        sources = {self.client_address(e): e for e in self.edge_names}

        def lift():
            for a, b in broken:
                t.link(a, b).clear()
        t0 = time.monotonic()
        try:
            for a, b in broken:
                t.link(a, b).impair(blackhole=True, direction="a->b")
            applied = time.monotonic() - t0

            def udp():
                return {sources[s]: at - t0 for s, at in
                        self.sink.first_from({f"to-{last}"}, t0).items() if s in sources}

            def tcp():
                return {e: at - t0 for e, at in self.connected(t0 + applied).items()}
            want = len(self.edge_names) if self.connectors else 0
            ok = self.wait_for(lambda: len(udp()) == len(sources) and len(tcp()) == want,
                               timeout)
            hist = {e: [r for r in self.daemons[e].history if r.at >= t0 and r.dest == "origin"]
                    for e in self.edge_names}
            out = {"ok": ok, "relay": last, "applied_s": applied, "before": before,
                   "udp": udp(), "tcp": tcp(),
                   "chose": {e: min((r.at - t0 for r in h if r.choice == last), default=None)
                             for e, h in hist.items()},
                   "moves": {e: [(r.choice, r.at - t0) for r in h if r.choice != r.previous]
                             for e, h in hist.items()}}
        except BaseException:
            lift()
            raise
        if keep:
            out["lift"] = lift
        else:
            lift()
        return out

    def choices(self, dest: str = "origin") -> dict[str, str]:
        return {e: self.daemons[e].choices().get(dest) for e in self.edge_names}

    def stop(self) -> None:
        """Everything down, idempotent: streams, connections, origin, daemons (and
        their pins), nats-server, namespaces."""
        from argoctl import datapath
        errors = []
        for x in [*self.streams.values(), *self.connectors.values(), self.tcp, self.sink,
                  self.responder]:
            if x is not None:
                x.stop()
        self.streams, self.connectors = {}, {}
        self.tcp, self.sink, self.responder = None, None, None
        for d in self.daemons.values():
            try:
                d.stop()
            except Exception as e:          # keep tearing down
                errors.append(e)
            finally:
                datapath.detach(d.home.pin_dir, netns=d.opts.ns, cgroup=None)
        self.daemons = {}
        loop.remove_datapaths(self._pins)   # compiled for a daemon that never started
        if self.nats is not None:
            self.nats.stop()
            self.nats = None
        if self.topo is not None:
            self.topo.stop()
            self.topo = None
        if errors:
            raise errors[0]

    def __enter__(self) -> "FleetLab":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
