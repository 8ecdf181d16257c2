"""Network-namespace topologies: hosts are namespaces, links are veth pairs.

    with Topology(prefix="agt") as t:            # netns f"{prefix}-{host}"; stop() on exit
        edge = t.add_host("edge", loopback="192.0.2.1", loopback6="2001:db8::1")
        origin = t.add_host("origin", loopback="192.0.2.4")
        t.add_link(edge, origin, subnet="192.0.2.64/30")     # edge:to-origin .65, origin:to-edge .66
        t.add_route(edge, "192.0.2.4/32", via=origin)        # src = edge's loopback
        t.start()
        edge.run(["ping", "-c1", "192.0.2.4"], check=True)
        t.link(edge, origin).impair(delay_ms=100, direction="a->b")   # edge -> origin only
        t.link(edge, origin).clear()

Every host forwards (IPv4 and IPv6), has rp_filter off and IPv6 DAD off (addresses
usable at once). Link ends get fixed MACs and permanent neighbour entries, so an
impairment acts at L3 only (a one-way blackhole does not also starve ARP/ND of the
other direction). A node's underlay address lives on `lo` as a /32 (/128); routes
added with `add_route` use it as source. One-way impairment = netem on the egress of
one veth end ("a->b" = packets from a to b, a and b in the order given to `link()`).
A blackhole without netem in the kernel falls back to an nftables netdev egress
chain (table `netdev argoctl_topo` in that host). `stop()` kills every process
started in the hosts and deletes the namespaces (and so their links), even after
an exception; `cleanup_stale(prefix)` removes what a crashed run left.

The project's standard lab (`Topology.default()`), all documentation ranges:

    node     underlay (lo)               other
    edge     192.0.2.1   2001:db8::1     198.51.100.1/25, 2001:db8:c::1/64 on to-client
    relay1   192.0.2.2   2001:db8::2
    relay2   192.0.2.3   2001:db8::3
    origin   192.0.2.4   2001:db8::4     203.0.113.10, 2001:db8:f::10 on lo (the origin server)
    client   -                           198.51.100.2/25, 2001:db8:c::2/64, default via edge

    Full mesh of point-to-point links between edge, relay1, relay2, origin, in the
    order of MESH_PAIRS; pair i uses 192.0.2.(64+4i)/30 (first node .65+4i, second
    .66+4i) and 2001:db8:ff:i::/64 (::1 first, ::2 second):
      0 edge-relay1   1 edge-relay2   2 edge-origin
      3 relay1-relay2 4 relay1-origin 5 relay2-origin
    Each mesh node routes every other node's underlay /32 and /128 over their direct
    link; edge, relay1 and relay2 route 203.0.113.0/24 and 2001:db8:f::/48 directly
    to origin (edge->origin directly = the "direct" path); relay1, relay2 and origin
    route 198.51.100.0/25 and 2001:db8:c::/64 directly to edge.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

NETNS_DIR = Path("/run/netns")
IFNAMSIZ = 15
CLONE_NEWNET = 0x40000000
NFT_TABLE = "argoctl_topo"

HOST_SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/forwarding": "1",
    "net/ipv4/conf/all/rp_filter": "0",
    "net/ipv4/conf/default/rp_filter": "0",
    "net/ipv6/conf/all/accept_dad": "0",
    "net/ipv6/conf/default/accept_dad": "0",
}

# The standard lab (see the module docstring).
UNDERLAY = {
    "edge": ("192.0.2.1", "2001:db8::1"),
    "relay1": ("192.0.2.2", "2001:db8::2"),
    "relay2": ("192.0.2.3", "2001:db8::3"),
    "origin": ("192.0.2.4", "2001:db8::4"),
}
MESH_PAIRS = [("edge", "relay1"), ("edge", "relay2"), ("edge", "origin"),
              ("relay1", "relay2"), ("relay1", "origin"), ("relay2", "origin")]
CLIENT_LAN = ("198.51.100.0/25", "2001:db8:c::/64")
ORIGIN_PREFIX = ("203.0.113.0/24", "2001:db8:f::/48")
ORIGIN_SERVER = ("203.0.113.10", "2001:db8:f::10")


class TopologyError(RuntimeError):
    pass


def _run(argv: list[str], *, input: str | None = None, check: bool = True,
         timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise TopologyError(f"{' '.join(argv)} exited {proc.returncode}: {detail}"
                            + (f"\ninput:\n{input}" if input else ""))
    return proc


def _ip_batch(netns: str, lines: list[str]) -> None:
    """Many `ip` commands in one process (cheap in a slow VM)."""
    if lines:
        _run(["ip", "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n")


def list_namespaces() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def _kill_netns_processes(netns: str) -> None:
    pids = _run(["ip", "netns", "pids", netns], check=False).stdout.split()
    for pid in pids:
        if pid == str(os.getpid()):
            continue        # our own thread inside the namespace: never kill ourselves
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _delete_namespace(netns: str) -> None:
    _kill_netns_processes(netns)
    _run(["ip", "netns", "del", netns], check=False)


def cleanup_stale(prefix: str) -> list[str]:
    """Delete the namespaces `prefix-*` (and kill their processes); returns their names."""
    stale = [n for n in list_namespaces() if n.startswith(prefix + "-")]
    for n in stale:
        _delete_namespace(n)
    return stale


_libc = ctypes.CDLL(None, use_errno=True)


# pyroute2 opens a socket in a namespace through a forked child that must hand
# it back within 2 s, 10 s in all. Under TCG on a loaded machine forking a big
# Python process takes longer: the lab (and the daemons it runs in-process)
# waits up to these instead of failing.
PYROUTE2_COMMUNICATE_S = 20
PYROUTE2_CREATE_SOCKET_S = 120


def patient_pyroute2() -> None:
    from pyroute2 import config as prconfig
    prconfig.default_communicate_timeout = max(prconfig.default_communicate_timeout,
                                               PYROUTE2_COMMUNICATE_S)
    prconfig.default_create_socket_timeout = max(prconfig.default_create_socket_timeout,
                                                 PYROUTE2_CREATE_SOCKET_S)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass(eq=False)
class Host:
    topo: "Topology"
    name: str
    netns: str
    loopback: str | None = None
    loopback6: str | None = None
    extra: list[str] = field(default_factory=list)      # more addresses on lo

    def __repr__(self) -> str:
        return f"Host({self.name!r}, netns={self.netns!r})"

    def address(self, family: int = 4) -> str | None:
        """The underlay (loopback) address of this host."""
        return self.loopback if family == 4 else self.loopback6

    def run(self, argv: list[str], *, check: bool = False, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run `argv` inside this host; output captured as text."""
        return _run(["ip", "netns", "exec", self.netns, *argv], input=input, check=check,
                    timeout=timeout)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start `argv` in the background inside this host; killed by `Topology.stop()`."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *argv],
                                start_new_session=True, **kwargs)
        self.topo._procs.append(proc)
        return proc

    def ipr(self):
        """A pyroute2 IPRoute bound to this host's namespace (use as a context manager)."""
        from pyroute2 import IPRoute
        patient_pyroute2()
        return IPRoute(netns=self.netns)

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Switch the calling thread into this namespace (sockets opened here stay in it).

        /sys and /proc/sys are not remounted: use `sysctl()` or `run()` for those."""
        with open("/proc/thread-self/ns/net") as home, open(NETNS_DIR / self.netns) as target:
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def sysctl(self, settings: dict[str, str | int]) -> None:
        """Write sysctls ("net/ipv4/ip_forward" or "net.ipv4.ip_forward") in this namespace."""
        script = "".join(
            f"echo {str(v)} > /proc/sys/{k.replace('.', '/')}\n" for k, v in settings.items())
        self.run(["sh", "-ec", script], check=True)

    def ping(self, dst: str, *, count: int = 1, timeout: float = 2, interval: float = 0.2,
             src: str | None = None) -> bool:
        """Whether `dst` answers at least one of `count` pings."""
        argv = ["ping", "-n", "-q", "-c", str(count), "-W", str(timeout), "-i", str(interval)]
        if src:
            argv += ["-I", src]
        return self.run(argv + [dst], timeout=timeout * count + 10).returncode == 0

    def ifname(self, peer: "Host") -> str:
        """The name of this host's interface on its link to `peer`."""
        return self.topo.link(self, peer).a.ifname


def udp_delivers(src: Host, dst: Host, address: str, *, tries: int = 3,
                 timeout: float = 1.0) -> bool:
    """Whether a UDP datagram sent from `src` to `address` (an address of `dst`) arrives.

    One direction only, no reply needed: the check for one-way blackholes. In-process
    sockets (no Python subprocess: those cost seconds in the VM)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with dst.inside():
        rx = socket.socket(family, socket.SOCK_DGRAM)
    with src.inside():
        tx = socket.socket(family, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind((address, 0))
        rx.settimeout(timeout)
        port = rx.getsockname()[1]
        for _ in range(tries):
            try:
                tx.sendto(b"argoctl-topo", (address, port))
            except OSError:
                pass            # e.g. no route, or ICMP error from an earlier datagram
            try:
                if rx.recv(64) == b"argoctl-topo":
                    return True
            except (socket.timeout, OSError):
                continue
    return False


@dataclass(eq=False)
class LinkEnd:
    host: Host
    ifname: str
    addr: ipaddress.IPv4Interface | None = None
    addr6: ipaddress.IPv6Interface | None = None
    mac: str | None = None
    impaired: set[str] = field(default_factory=set)     # "netem" and/or "nft"


class Link:
    """A veth pair between hosts a and b (a, b in the order given to `Topology.link`)."""

    def __init__(self, a: LinkEnd, b: LinkEnd, mtu: int | None = None):
        self.a, self.b, self.mtu = a, b, mtu

    def __repr__(self) -> str:
        return f"Link({self.a.host.name}:{self.a.ifname} <-> {self.b.host.name}:{self.b.ifname})"

    def reversed(self) -> "Link":
        return Link(self.b, self.a, self.mtu)

    def end(self, host: Host) -> LinkEnd:
        for e in (self.a, self.b):
            if e.host is host:
                return e
        raise TopologyError(f"{host.name} is not on {self!r}")

    def address(self, host: Host, family: int = 4) -> str:
        """`host`'s address on this link (no prefix length)."""
        e = self.end(host)
        iface = e.addr if family == 4 else e.addr6
        if iface is None:
            raise TopologyError(f"{self!r} has no IPv{family} address on {host.name}")
        return str(iface.ip)

    def _ends(self, direction: str) -> list[LinkEnd]:
        # The sender's egress carries the impairment.
        ends = {"a->b": [self.a], "b->a": [self.b], "both": [self.a, self.b]}
        if direction not in ends:
            raise TopologyError(f"direction {direction!r}: expected 'a->b', 'b->a' or 'both'")
        return ends[direction]

    def impair(self, *, delay_ms: float = 0, jitter_ms: float = 0, loss_pct: float = 0,
               blackhole: bool = False, rate_mbit: float | None = None,
               direction: str = "both") -> None:
        """Replace this link's impairment in `direction` (netem on the sender's egress)."""
        if jitter_ms and not delay_ms:
            raise TopologyError("jitter_ms needs delay_ms")
        for end in self._ends(direction):
            self._clear_end(end)
            argv = ["tc", "qdisc", "replace", "dev", end.ifname, "root", "netem",
                    "limit", "10000"]
            if delay_ms:
                argv += ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])
            loss = 100 if blackhole else loss_pct
            if loss:
                argv += ["loss", f"{loss}%"]
            if rate_mbit:
                argv += ["rate", f"{rate_mbit}mbit"]
            proc = end.host.run(argv)
            if proc.returncode == 0:
                end.impaired.add("netem")
            elif blackhole and not delay_ms and not rate_mbit:
                self._nft_blackhole(end)    # this kernel has no netem
            else:
                raise TopologyError(
                    f"{end.host.name}: {' '.join(argv)}: {proc.stderr.strip()} (netem needs "
                    f"sch_netem: run such tests in tests/integration, i.e. in the VM)")

    @staticmethod
    def _nft_chain(end: LinkEnd) -> str:
        return "bh_" + end.ifname.replace("-", "_")

    def _nft_blackhole(self, end: LinkEnd) -> None:
        chain = self._nft_chain(end)
        end.host.run(["nft", "-f", "-"], check=True, input=(
            f"table netdev {NFT_TABLE} {{\n"
            f"  chain {chain} {{ type filter hook egress device \"{end.ifname}\" priority 0;"
            f" policy drop; }}\n}}\n"))
        end.impaired.add("nft")

    def _clear_end(self, end: LinkEnd) -> None:
        if "netem" in end.impaired:
            end.host.run(["tc", "qdisc", "del", "dev", end.ifname, "root"], check=True)
        if "nft" in end.impaired:
            end.host.run(["nft", "delete", "chain", "netdev", NFT_TABLE, self._nft_chain(end)],
                         check=True)
        end.impaired.clear()

    def clear(self, direction: str = "both") -> None:
        """Remove impairments in `direction`."""
        for end in self._ends(direction):
            self._clear_end(end)


@dataclass
class _Route:
    host: Host
    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: str
    dev: str
    src: str | None

    def line(self) -> str:
        cmd = f"route replace {self.prefix} via {self.gateway} dev {self.dev}"
        return cmd + (f" src {self.src}" if self.src else "")


class Topology:
    """Hosts, links and routes; created by `start()`, removed by `stop()`."""

    def __init__(self, prefix: str = "agt"):
        if not prefix or "/" in prefix:
            raise TopologyError(f"bad prefix {prefix!r}")
        self.prefix = prefix
        self.hosts: dict[str, Host] = {}
        self.links: list[Link] = []
        self.routes: list[_Route] = []
        self.started = False
        self._procs: list[subprocess.Popen] = []
        self._created: list[str] = []

    # -- description (applied at once when already started) --------------------------

    def add_host(self, name: str, *, loopback: str | None = None,
                 loopback6: str | None = None) -> Host:
        if name in self.hosts:
            raise TopologyError(f"host {name!r} already exists")
        if len("to-" + name) > IFNAMSIZ or not name.replace("_", "").isalnum():
            raise TopologyError(f"host name {name!r}: letters/digits, at most {IFNAMSIZ - 3}")
        host = Host(self, name, f"{self.prefix}-{name}", loopback, loopback6)
        self.hosts[name] = host
        if self.started:
            self._create_hosts([host])
        return host

    def add_address(self, host: Host, address: str) -> None:
        """Another address on the host's lo (a /32 or /128 unless a length is given)."""
        host.extra.append(address)
        if self.started:
            _ip_batch(host.netns, [f"address add {self._lo_cidr(address)} dev lo"])

    def add_link(self, a: Host, b: Host, *, subnet: str | None = None,
                 subnet6: str | None = None, mtu: int | None = None) -> Link:
        """A veth pair `to-<b>` (in a) <-> `to-<a>` (in b); a gets the subnet's first
        host address, b the second."""
        if self._find_link(a, b):
            raise TopologyError(f"{a.name} and {b.name} are already linked")
        link = Link(LinkEnd(a, f"to-{b.name}"), LinkEnd(b, f"to-{a.name}"), mtu)
        for net, attr in ((subnet, "addr"), (subnet6, "addr6")):
            if net is None:
                continue
            network = ipaddress.ip_network(net)
            if (network.version == 4) != (attr == "addr"):
                raise TopologyError(f"{net}: wrong family for {'subnet6' if attr == 'addr6' else 'subnet'}")
            hosts = iter(network.hosts())
            try:
                first, second = next(hosts), next(hosts)
            except StopIteration:
                raise TopologyError(f"subnet {net} has fewer than two addresses") from None
            iface = ipaddress.ip_interface
            setattr(link.a, attr, iface(f"{first}/{network.prefixlen}"))
            setattr(link.b, attr, iface(f"{second}/{network.prefixlen}"))
        self.links.append(link)
        if self.started:
            self._create_links([link])
        return link

    def add_route(self, host: Host, prefix: str, *, via: Host | str,
                  src: str | None = "auto") -> None:
        """Route `prefix` ("default" = 0.0.0.0/0) from `host` via a linked neighbour.

        `src` defaults to host's loopback of the prefix's family (None: no src)."""
        net = ipaddress.ip_network("0.0.0.0/0" if prefix == "default" else prefix)
        family = net.version
        if isinstance(via, Host):
            link = self.link(host, via)
            gateway, dev = link.address(via, family), link.a.ifname
        else:
            gateway = via
            link = next((l for l in self.links for e in (l.a, l.b) if e.host is host
                         and self._on_subnet(e, gateway)), None)
            if link is None:
                raise TopologyError(f"{host.name}: no link on the subnet of {gateway}")
            dev = link.end(host).ifname
        if src == "auto":
            src = host.address(family)
        route = _Route(host, net, gateway, dev, src)
        self.routes.append(route)
        if self.started:
            _ip_batch(host.netns, [route.line()])

    @staticmethod
    def _on_subnet(end: LinkEnd, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(i is not None and ip in i.network for i in (end.addr, end.addr6))

    # -- lookup ----------------------------------------------------------------------

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def _find_link(self, a: Host, b: Host) -> Link | None:
        for link in self.links:
            if link.a.host is a and link.b.host is b:
                return link
            if link.a.host is b and link.b.host is a:
                return link.reversed()
        return None

    def link(self, a: Host | str, b: Host | str) -> Link:
        """The link between a and b, oriented a -> b."""
        a = self.hosts[a] if isinstance(a, str) else a
        b = self.hosts[b] if isinstance(b, str) else b
        link = self._find_link(a, b)
        if link is None:
            raise TopologyError(f"no link between {a.name} and {b.name}")
        return link

    # -- life cycle ------------------------------------------------------------------

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Topology":
        """Create everything described so far (on failure, removes what it made)."""
        if self.started:
            return self
        self.started = True
        try:
            self._create_hosts(list(self.hosts.values()))
            self._create_links(self.links)
            by_host: dict[str, list[str]] = {}
            for r in self.routes:
                by_host.setdefault(r.host.netns, []).append(r.line())
            for netns, lines in by_host.items():
                _ip_batch(netns, lines)
            self._wait_settled()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_settled(self, timeout: float = 30.0) -> None:
        """Return once every link end is operationally up with its IPv6 link-local
        address. The kernel applies carrier changes late (linkwatch batches them,
        up to a second apart, longer on a busy host) and adds the link-local
        address only then: a caller that looked earlier (a snapshot, a probe)
        would see the lab still changing under it."""
        ends: dict[str, set[str]] = {}
        for link in self.links:
            for end in (link.a, link.b):
                ends.setdefault(end.host.netns, set()).add(end.ifname)
        ipv6 = os.path.exists("/proc/sys/net/ipv6")   # our links never disable it
        deadline = time.monotonic() + timeout
        pending = dict(ends)
        while True:
            for netns in list(pending):
                out = _run(["ip", "-n", netns, "-j", "addr", "show"]).stdout
                ready = set()
                for dev in json.loads(out or "[]"):
                    ll = any(a.get("family") == "inet6" and a.get("scope") == "link"
                             for a in dev.get("addr_info", []))
                    if dev.get("operstate") == "UP" and (ll or not ipv6):
                        ready.add(dev["ifname"])
                if pending[netns] <= ready:
                    del pending[netns]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TopologyError(f"links not up after {timeout:.0f}s: "
                                    + ", ".join(f"{ns}: {sorted(i)}" for ns, i in pending.items()))
            time.sleep(0.05)

    @staticmethod
    def _lo_cidr(address: str) -> str:
        return address if "/" in address else str(ipaddress.ip_interface(address))

    def _create_hosts(self, hosts: list[Host]) -> None:
        for h in hosts:
            if h.netns in list_namespaces():
                raise TopologyError(f"namespace {h.netns} already exists (a stale run? "
                                    f"cleanup_stale({self.prefix!r}))")
            _run(["ip", "netns", "add", h.netns])
            self._created.append(h.netns)
            h.sysctl(HOST_SYSCTLS)
            lines = ["link set lo up"]
            for addr in [h.loopback, h.loopback6, *h.extra]:
                if addr:
                    lines.append(f"address add {self._lo_cidr(addr)} dev lo")
            _ip_batch(h.netns, lines)

    def _create_links(self, links: list[Link]) -> None:
        # Fixed MACs and permanent neighbour entries: an impairment then acts at L3
        # only (a one-way blackhole must not also starve ARP/ND of the other way).
        for link in links:   # both ends are created in a's namespace call
            n = self.links.index(link)
            link.a.mac, link.b.mac = (f"02:a7:{n >> 8:02x}:{n & 0xff:02x}:00:{i:02x}"
                                      for i in (1, 2))
            mtu = f" mtu {link.mtu}" if link.mtu else ""
            _ip_batch(link.a.host.netns, [
                f"link add {link.a.ifname} address {link.a.mac}{mtu} type veth peer name "
                f"{link.b.ifname} address {link.b.mac}{mtu} netns {link.b.host.netns}"])
        for link in links:
            for end, peer in ((link.a, link.b), (link.b, link.a)):
                lines = []
                for mine, theirs in ((end.addr, peer.addr), (end.addr6, peer.addr6)):
                    if mine is None:
                        continue
                    lines.append(f"address add {mine} dev {end.ifname}"
                                 + (" nodad" if mine.version == 6 else ""))
                    lines.append(f"neighbour replace {theirs.ip} lladdr {peer.mac} "
                                 f"dev {end.ifname} nud permanent")
                _ip_batch(end.host.netns, lines + [f"link set {end.ifname} up"])

    def stop(self) -> None:
        """Kill processes started in the hosts and delete the namespaces. Idempotent."""
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 2
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._procs.clear()
        for netns in reversed(self._created):
            _delete_namespace(netns)
        self._created.clear()
        self.started = False

    # -- the project's standard lab ----------------------------------------------------

    @classmethod
    def default(cls, prefix: str = "ag", *, ipv6: bool = True) -> "Topology":
        """client - edge, full mesh edge/relay1/relay2/origin (see module docstring).

        Not started: call `start()` (or add more first)."""
        t = cls(prefix)
        for name, (v4, v6) in UNDERLAY.items():
            t.add_host(name, loopback=v4, loopback6=v6 if ipv6 else None)
        client = t.add_host("client")
        origin = t["origin"]
        t.add_address(origin, ORIGIN_SERVER[0])
        if ipv6:
            t.add_address(origin, ORIGIN_SERVER[1])
        for i, (a, b) in enumerate(MESH_PAIRS):
            t.add_link(t[a], t[b], subnet=f"192.0.2.{64 + 4 * i}/30",
                       subnet6=f"2001:db8:ff:{i}::/64" if ipv6 else None)
        t.add_link(t["edge"], client, subnet=CLIENT_LAN[0],
                   subnet6=CLIENT_LAN[1] if ipv6 else None)
        families = (0, 1) if ipv6 else (0,)
        for f in families:
            t.add_route(client, ("0.0.0.0/0", "::/0")[f], via=t["edge"])
            for x in UNDERLAY:
                for y in UNDERLAY:
                    if x != y:
                        t.add_route(t[x], f"{UNDERLAY[y][f]}/{(32, 128)[f]}", via=t[y])
                if x != "origin":
                    t.add_route(t[x], ORIGIN_PREFIX[f], via=origin)
                if x != "edge":
                    t.add_route(t[x], CLIENT_LAN[f], via=t["edge"])
        return t

    def fwmark_paths(self, routing, relay_of: dict) -> None:
        """Stand-in paths on the standard lab's edge for kernels without GRE: path id
        N (`relay_of[N]` = "relay1"/"relay2") routes through that relay's underlay
        link by its fwmark rule and table, as argoctl's tunnels would; direct (0)
        looks up main. `routing` is a config.Routing (marks, tables, priorities)."""
        edge = self["edge"]
        mask = routing.fwmark_mask
        lines = [f"rule add fwmark {routing.mark(0):#x}/{mask:#x} lookup main "
                 f"priority {routing.priority(0)}"]
        for pid, name in relay_of.items():
            relay = self[name]
            gw = self.link(edge, relay).address(relay, 4)
            lines += [f"route add default via {gw} dev to-{name} src {edge.address(4)} "
                      f"table {routing.table(pid)}",
                      f"rule add fwmark {routing.mark(pid):#x}/{mask:#x} lookup "
                      f"{routing.table(pid)} priority {routing.priority(pid)}"]
        edge.run(["ip", "-4", "-batch", "-"], input="\n".join(lines) + "\n", check=True)
