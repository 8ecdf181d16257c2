"""The eBPF datapath: compile bpf/ with bcc, pin, attach, adopt, detach.

Lifecycle:
- first `attach`: compile once (bcc, seconds), pin every program and map under
  the pin directory, attach the tc programs with pyroute2 and the socket
  programs to a cgroup;
- later `attach` (a restarted argoctl): the pins exist and the filters point at
  the pinned programs -> adopt them, no compile, no reload, no packet dropped;
- `program(config)` writes destinations and path sets through the pinned maps;
- `detach` removes our filters (recognised by name and priority), the cgroup
  hooks, and the pins.

Objects are per pin directory, so several lab nodes (network namespaces on one
kernel) each run their own datapath."""

from __future__ import annotations

import os
import re
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Iterable, Optional

from argoctl import bpfsys, home, maps, names
from argoctl.hooks import (FILTER_PREFIX, SOCK_PROGRAMS, TC_HANDLE, TC_INGRESS,  # noqa: F401
                           TC_PRIO, TC_PROGRAMS, _cgroup_attach, _cgroup_attached,
                           _cgroup_detach, _link, _netlink, _no_step, _our_filters,
                           _remove_clsact, _tc_detach, _tc_detach_all, tc_attach_all,
                           ClsactDevices, filters_in_place, remove_clsacts)
from argoctl.config import Config
from argoctl.config import rules as config_rules

# The datapath's C sources are package data (argoctl/bpf), so a regular install
# has them too; ARGOCTL_BPF_DIR overrides for development.
BPF_DIR = FsPath(os.environ.get("ARGOCTL_BPF_DIR") or str(resources.files("argoctl") / "bpf"))
ENTRY_FILES = ("steer_tc.c", "passive_tc.c", "steer_sock.c", "steer_sockops.c")
BPF_FS_MAGIC = home.BPF_FS_MAGIC

ARPHRD_ETHER = 1


class DatapathError(Exception):
    pass


# -- building --------------------------------------------------------------

def source(entries: Iterable[str | FsPath] = ENTRY_FILES, bpf_dir: FsPath = BPF_DIR) -> str:
    """One C text: the entry files with their local includes inlined once.

    bcc rewrites map accesses only in its main file, so headers that use maps
    must be part of it rather than #included."""
    seen: set[FsPath] = set()
    out: list[str] = []

    def emit(path: FsPath) -> None:
        path = path.resolve()
        if path in seen:
            return
        seen.add(path)
        for line in path.read_text().splitlines():
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if m:
                emit(path.parent / m.group(1))
            else:
                out.append(line)

    for e in entries:
        emit(bpf_dir / e)          # an absolute entry (a bench program) stands as it is
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Sizes:
    """Map sizes baked in at compile time (-D)."""
    max_dests: int = config_rules.MAX_DESTINATIONS + 1      # ids 1..max_dests-1
    max_prefixes_v4: int = config_rules.MAX_PREFIXES_V4     # validate checks against these
    max_prefixes_v6: int = config_rules.MAX_PREFIXES_V6
    max_flows: int = 131072

    def cflags(self) -> list[str]:
        return [f"-DMAX_DESTS={self.max_dests}", f"-DMAX_PREFIXES_V4={self.max_prefixes_v4}",
                f"-DMAX_PREFIXES_V6={self.max_prefixes_v6}", f"-DMAX_FLOWS={self.max_flows}"]


def compile_bpf(pin_dir: Optional[str] = None, sizes: Sizes = Sizes(),
                entries: Iterable[str | FsPath] = ENTRY_FILES, extra_cflags: Iterable[str] = ()):
    """Compile with bcc. With pin_dir, maps are pinned there (or adopted if
    already pinned). Returns the bcc.BPF object."""
    from bcc import BPF  # bcc is slow to import; only needed when compiling

    cflags = sizes.cflags() + list(extra_cflags)
    if pin_dir:
        ensure_bpffs(os.path.dirname(pin_dir.rstrip("/")))
        os.makedirs(pin_dir, exist_ok=True)
        cflags.append(f'-DPIN_DIR="{pin_dir}"')
    return BPF(text=source(entries), cflags=cflags)


def ensure_bpffs(directory: str) -> None:
    """Pins need a bpf filesystem. Mount one on `directory` if it is not one
    already (what iproute2 and Cilium do for /sys/fs/bpf)."""
    os.makedirs(directory, exist_ok=True)
    if home.fs_magic(directory) == BPF_FS_MAGIC:
        return
    import subprocess
    proc = subprocess.run(["mount", "-t", "bpf", "bpf", directory], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DatapathError(f"cannot mount bpffs on {directory}: {proc.stderr.strip()}")


def cgroup2_root() -> Optional[str]:
    """Mount point of the cgroup v2 hierarchy (None if there is none)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return parts[1]
    return None


DEFAULT_CGROUP = "auto"   # the cgroup2 root


def default_pin_dir() -> str:
    """The pin directory of the namespace this process is in (home.py decides)."""
    return home.pin_dir()


def _cgroup_path(cgroup: Optional[str]) -> Optional[str]:
    if cgroup == DEFAULT_CGROUP and not home.in_init_netns():
        return None   # a node in a namespace does not hook every socket of the host
    if cgroup == DEFAULT_CGROUP:
        root = cgroup2_root()
        if root is None:
            raise DatapathError("no cgroup2 hierarchy mounted: local sockets cannot be steered "
                                "(mount one, or attach with cgroup=None)")
        return root
    return cgroup


def load_programs(b, names_: Iterable[str]) -> dict[str, int]:
    """Load the named functions; returns name -> program fd (owned by `b`)."""
    from bcc import BPF
    fds = {}
    for n in names_:
        if n == "sock_ops":
            args = (BPF.SOCK_OPS,)
            kw = {}
        elif n in SOCK_PROGRAMS:
            args, kw = (BPF.CGROUP_SOCK_ADDR,), {"attach_type": SOCK_PROGRAMS[n]}
        else:
            args, kw = (BPF.SCHED_CLS,), {}
        fds[n] = _load_func(b, n, args, kw).fd
    return fds


def _load_func(b, name: str, args: tuple, kw: dict, attempts: int = 5):
    """b.load_func, retried when the verifier gave up because a signal arrived
    (EAGAIN; libbpf retries the same way). bcc reports errno only in the text."""
    for i in range(attempts):
        try:
            return b.load_func(name, *args, **kw)
        except Exception as e:
            if i == attempts - 1 or "Resource temporarily unavailable" not in str(e):
                raise


def map_fds(b) -> dict[str, int]:
    """Map name -> fd of a compiled bcc object."""
    out = {}
    for n in maps.MAP_NAMES:
        try:
            out[n] = b.get_table(n).map_fd
        except KeyError:
            pass
    return out


# -- pins ------------------------------------------------------------------

def _prog_pin(pin_dir: str, prog: str) -> str:
    return os.path.join(pin_dir, "prog_" + prog)


def _pinned_programs(pin_dir: str) -> dict[str, int]:
    """Open every pinned program; name -> fd (caller closes)."""
    fds = {}
    for prog in list(TC_PROGRAMS) + list(SOCK_PROGRAMS):
        path = _prog_pin(pin_dir, prog)
        if os.path.exists(path):
            fds[prog] = bpfsys.obj_get(path)
    return fds


def _pins_complete(pin_dir: str) -> bool:
    return (all(os.path.exists(os.path.join(pin_dir, m)) for m in maps.MAP_NAMES)
            and all(os.path.exists(_prog_pin(pin_dir, p))
                    for p in list(TC_PROGRAMS) + list(SOCK_PROGRAMS)))


def _pinned_abi_ok(pin_dir: str) -> bool:
    try:
        with maps.Maps(pin_dir) as m:
            s = m.settings()
            return s.abi in (0, maps.ABI)  # 0: loaded but never programmed
    except (OSError, FileNotFoundError):
        return False


def ensure_loaded(pin_dir: str = names.BPF_PIN_DIR, sizes: Sizes = Sizes()) -> tuple[bool, dict[str, int]]:
    """Make sure pinned programs and maps exist. Returns (compiled?, program fds).

    Adopts existing pins without compiling. Compiling while maps are pinned
    reuses them (bcc opens pinned maps), so routes and flows survive."""
    if _pins_complete(pin_dir) and _pinned_abi_ok(pin_dir):
        return False, _pinned_programs(pin_dir)
    if os.path.isdir(pin_dir) and not _pinned_abi_ok(pin_dir):
        # Maps of another layout cannot be reused: start them afresh. Filters
        # keep running the old programs until replaced below.
        for entry in os.listdir(pin_dir):
            os.unlink(os.path.join(pin_dir, entry))
    b = compile_bpf(pin_dir, sizes)
    progs = load_programs(b, list(TC_PROGRAMS) + list(SOCK_PROGRAMS))
    fds = {}
    for n, fd in progs.items():
        path = _prog_pin(pin_dir, n)
        if os.path.exists(path):
            os.unlink(path)   # replaced below; running filters keep the old one until swapped
        bpfsys.obj_pin(fd, path)
        fds[n] = os.dup(fd)
    # bcc pins the maps itself (BPF_TABLE_PINNED) when PIN_DIR is set.
    missing = [m for m in maps.MAP_NAMES if not os.path.exists(os.path.join(pin_dir, m))]
    if missing:
        raise DatapathError(f"maps not pinned after load: {missing}")
    b.cleanup()
    return True, fds


# -- the API the control plane calls ----------------------------------------

@dataclass
class AttachResult:
    compiled: bool                       # False: adopted the running datapath
    steered: list[str] = field(default_factory=list)    # interfaces with steer_*
    passive: list[str] = field(default_factory=list)    # interfaces with passive_*
    newly_attached: list[str] = field(default_factory=list)
    cgroup: Optional[str] = None
    # what this call created, for undo(): a failure rolls back exactly these
    pin_dir: str = ""
    pins_created: bool = False           # the pin directory did not exist before
    clsact_added: list[str] = field(default_factory=list)
    cgroup_attached: list[str] = field(default_factory=list)


MAIN_TABLE_DUMP_MAX = 4096    # larger main tables (full BGP feeds): one `route get` per address


def _route_ifnames(ipr, addresses, snap=None, links=None) -> list[str]:
    """Devices the main table sends these addresses out of: where replies for
    the direct path (and tunnel underlay traffic) come back in. One dump of the
    main table matched here (a `route get` per address costs ~10 ms in pyroute2:
    seconds at 200 peers and destinations), unless the table is large. `snap`: the
    main table's routes filtered by the kernel (rtbatch.Snapshot; pyroute2 dumps
    every table and filters in Python); `links`: {name: link} from a dump."""
    import ipaddress
    import socket
    # per family: {prefix length: {network as an int: oifs}} (the first route of a
    # prefix wins, as before): an address is matched by one dict look-up per prefix
    # length, longest first, not against every route (200 x 200 tests in the bench)
    routes: dict[int, Optional[dict]] = {}
    for fam, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
        rs: Optional[dict] = {}
        n = 0
        bits = 32 if fam == 4 else 128
        for msg in (snap.routes(af, table=254) if snap is not None
                    else ipr.get_routes(family=af, table=254)):
            oif = msg.get_attr("RTA_OIF")
            oifs = [oif] if oif else \
                [nh["oif"] for nh in (msg.get_attr("RTA_MULTIPATH") or []) if nh.get("oif")]
            if msg["type"] == 1 and oifs:          # RTN_UNICAST: goes out of a device
                # the network as an int from its bytes (ipaddress parsing its text
                # was half of this look-up)
                dst, plen = msg.get_attr("RTA_DST"), msg["dst_len"]
                net = int.from_bytes(socket.inet_pton(af, dst), "big") if dst else 0
                rs.setdefault(plen, {}).setdefault(net >> (bits - plen) << (bits - plen), oifs)
                n += 1
            if n > MAIN_TABLE_DUMP_MAX:
                rs = None
                break
        routes[fam] = rs
    out: list[str] = []
    names_by_index: dict[int, str] = {     # (a request per address was seconds at 200)
        l["index"]: name for name, l in (links or {}).items()}

    def add(oif):
        if oif not in names_by_index:
            names_by_index[oif] = _ifname(ipr, oif)
        name = names_by_index[oif]
        if name != "lo" and name not in out:
            out.append(name)
    for a in addresses:
        ip = a if isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address)) \
            else ipaddress.ip_address(a)     # (the watch list holds addresses already)
        table = routes[ip.version]
        if table is None:
            try:
                msgs = ipr.route("get", dst=str(a))
            except Exception:   # unreachable from here: nothing to watch
                continue
            for oif in (m.get_attr("RTA_OIF") for m in msgs):
                if oif:
                    add(oif)
            continue
        value, bits = int(ip), ip.max_prefixlen
        for plen in sorted(table, reverse=True):
            best = table[plen].get(value >> (bits - plen) << (bits - plen))
            if best is not None:
                for oif in best:
                    add(oif)
                break
    return out


def _ifname(ipr, index: int) -> str:
    return ipr.get_links(index)[0].get_attr("IFLA_IFNAME")


def attach(config: Config, pin_dir: str = names.BPF_PIN_DIR, netns: Optional[str] = None,
           cgroup: Optional[str] = DEFAULT_CGROUP, sizes: Sizes = Sizes(),
           res: Optional[AttachResult] = None, step=_no_step, intents=None,
           snap=None) -> AttachResult:
    """Load (or adopt) the datapath and attach it: steering on the node's
    steer_interfaces, passive signals on its tunnels and on the devices routing to its
    peers and destinations, the
    socket hooks on `cgroup` (None: no local steering). Idempotent.
    `res` records what this call created as it goes (undo() takes it back, even
    after a failure half-way); `step(what)` is called before each kernel write;
    `intents` (intent.Intents) records the clsact qdiscs argoctl adds; `snap`
    (rtbatch.Snapshot, of this namespace: netns None) the dumps to read from."""
    res = res if res is not None else AttachResult(compiled=False)
    cgroup = _cgroup_path(cgroup)
    if cgroup is not None and not os.path.isdir(cgroup):
        raise DatapathError(f"cgroup {cgroup} does not exist")
    with _netlink({}, netns) as ipr:   # check first: a bad config loads nothing
        # one link dump, not 2 a device (`snap`: the one `up` read its state from,
        # while no stage has written since)
        links = {l.get_attr("IFLA_IFNAME"): l
                 for l in (snap.links() if snap is not None else ipr.get_links())}
        missing = [i for i in config.node.steer_interfaces if i not in links]
    if missing:
        raise DatapathError(f"steer interface(s) not found: {', '.join(missing)}")
    res.pin_dir, res.cgroup = pin_dir, cgroup
    res.pins_created = not os.path.isdir(pin_dir)
    step("load the datapath")
    res.compiled, progs = ensure_loaded(pin_dir, sizes)
    with _netlink(progs, netns) as ipr:
        with maps.Maps(pin_dir) as m:
            s = m.settings()
            if (s.fwmark_mask != config.routing.fwmark_mask or s.abi != maps.ABI
                    or maps.reroute_on(s) != config.policy.reroute):
                m.write_settings(config.routing.fwmark_mask, reroute=config.policy.reroute)
        from argoctl import rtbatch       # (a socket of this namespace: netns None)
        sender = rtbatch.Sender() if netns is None else None
        clsact = ClsactDevices(ipr, sender)   # what had one before (never recorded as ours)
        devices = []            # (ifname, ifindex, program, fd): attached in batches
        for ifname in config.node.steer_interfaces:
            link = links.get(ifname)
            prog = "steer_eth" if link["ifi_type"] == ARPHRD_ETHER else "steer_l3"
            devices.append((ifname, link["index"], prog, progs[prog]))
        steered = list(config.node.steer_interfaces)
        passive = [names.link_name(p.name) for p in config.peers]
        watch = [p.address for p in config.peers]
        watch += [d.prefixes[0].network_address for d in config.destinations if d.prefixes]
        passive += [i for i in _route_ifnames(ipr, watch, snap, links) if i not in passive]
        passive = [i for i in passive if i in links and i not in steered]
        for ifname in passive:
            link = links[ifname]
            prog = "passive_eth" if link["ifi_type"] == ARPHRD_ETHER else "passive_l3"
            devices.append((ifname, link["index"], prog, progs[prog]))
        try:
            tc_attach_all(ipr, devices, res, step, intents, clsact, sender)
        finally:
            if sender is not None:
                sender.close()
        res.steered += steered
        res.passive += passive
        if cgroup:
            _cgroup_attach(progs, cgroup, res, step)
    return res


def undo(res: AttachResult, netns: Optional[str] = None, intents=None) -> None:
    """Take back what one attach() created (res), in reverse: cgroup hooks, filters,
    clsact qdiscs, and the pins if it made them. What was there before stays."""
    progs = _pinned_programs(res.pin_dir) if res.pin_dir and os.path.isdir(res.pin_dir) else {}
    with _netlink(progs, netns) as ipr:
        if res.cgroup and res.cgroup_attached:
            _cgroup_detach(progs, res.cgroup, only=res.cgroup_attached)
        for ifname in res.newly_attached:
            link = _link(ipr, ifname)
            if link is not None:
                _tc_detach(ipr, link["index"])
        for ifname in res.clsact_added:
            link = _link(ipr, ifname)
            if link is not None:
                _remove_clsact(ipr, ifname, link["index"], intents)
    if res.pins_created and res.pin_dir and os.path.isdir(res.pin_dir):
        for entry in os.listdir(res.pin_dir):
            os.unlink(os.path.join(res.pin_dir, entry))
        os.rmdir(res.pin_dir)


def config_pathsets(config: Config) -> dict[int, list[maps.Path]]:
    """The first path sets, before any measurement: Destination.first_weights,
    the one rule `up` and `run` share."""
    return {d.id: pathset(config, d.paths, d.first_weights()) for d in config.destinations}


def pathset(cfg: Config, dest_paths: tuple[str, ...],
            weights: dict[str, tuple[int, bool]]) -> list[maps.Path]:
    """Weights as the datapath's path set, in the destination's path order. A path
    with weight 0 that is up keeps its pinned flows; down moves them."""
    out = []
    for name in dest_paths:
        w, up = weights[name]
        pid = cfg.path_id(name)
        out.append(maps.Path(path_id=pid, mark=cfg.routing.mark(pid), weight=w, up=up))
    return out


def program(config: Config, pin_dir: str = names.BPF_PIN_DIR,
            pathsets: Optional[dict[int, list[maps.Path]]] = None,
            have: Optional[dict] = None) -> dict[str, int]:
    """Make the maps hold exactly the config's destinations: prefixes, then
    path sets (new prefixes point at a path set that already exists), then
    stale entries removed. Returns counts."""
    sets = pathsets if pathsets is not None else config_pathsets(config)
    want = {(p.version, maps.PREFIX_LEN.pack(p.prefixlen) + p.network_address.packed): d.id
            for d in config.destinations for p in d.prefixes}
    with maps.Maps(pin_dir) as m:
        return _write(m, sets, want, have)


def _write(m, sets: dict[int, list[maps.Path]], want: dict[tuple[int, bytes], int],
           have: Optional[dict] = None) -> dict[str, int]:
    """Path sets, then prefixes (as maps.encode_prefix keys) changed, then stale ones
    removed; `have`: the tries' prefix_keys() if the caller read them already."""
    m.set_pathsets(sets)
    if have is None:
        have = m.prefix_keys()
    changed = [(k, i) for k, i in want.items() if have.get(k) != i]
    stale = [k for k in have if k not in want]
    if changed:
        m.set_prefix_keys(changed, bump_epoch=not stale)
    if stale:
        m.remove_prefix_keys(stale)
    stale_ids = [i for i in m.dest_ids() if i not in sets]
    for i in stale_ids:
        m.remove_destination(i)
    return {"destinations": len(sets), "prefixes_written": len(changed),
            "prefixes_removed": len(stale), "destinations_removed": len(stale_ids)}


def map_contents(pin_dir: str) -> dict:
    """What the maps steer by (prefixes, path sets), to put back with restore_contents."""
    with maps.Maps(pin_dir) as m:
        sets = {i: paths for i, (_, paths) in sorted(m.pathsets().items())}
        return {"prefixes": m.prefix_keys(), "sets": sets}


def restore_contents(pin_dir: str, contents: dict) -> None:
    with maps.Maps(pin_dir) as m:
        _write(m, contents["sets"], contents["prefixes"])


def detach(pin_dir: str = names.BPF_PIN_DIR, netns: Optional[str] = None,
           cgroup: Optional[str] = DEFAULT_CGROUP, intents=None) -> dict:
    """Remove our tc filters, cgroup hooks and pins, and the clsact qdiscs the
    intent journal says argoctl added. Safe to run twice."""
    cgroup = cgroup2_root() if cgroup == DEFAULT_CGROUP else cgroup
    if cgroup is not None and not os.path.isdir(cgroup):
        cgroup = None
    progs = _pinned_programs(pin_dir) if os.path.isdir(pin_dir) else {}
    from argoctl import rtbatch       # (a socket of this namespace: netns None)
    sender = rtbatch.Sender() if netns is None else None
    try:
        with _netlink(progs, netns) as ipr:
            removed = _tc_detach_all(ipr, sender)
            if cgroup:
                _cgroup_detach(progs, cgroup)
            clsact = remove_clsacts(ipr, intents, removed, sender) \
                if intents is not None else []
    finally:
        if sender is not None:
            sender.close()
    unpinned = []
    if os.path.isdir(pin_dir):
        for entry in sorted(os.listdir(pin_dir)):
            os.unlink(os.path.join(pin_dir, entry))
            unpinned.append(entry)
        os.rmdir(pin_dir)
    return {"filters_removed": removed, "unpinned": unpinned, "clsact_removed": clsact}


def detach_filters(netns: Optional[str] = None) -> list[str]:
    """Only the tc filters (pins and maps stay: a later attach adopts them)."""
    with _netlink({}, netns) as ipr:
        return _tc_detach_all(ipr)


def status(pin_dir: str = names.BPF_PIN_DIR, netns: Optional[str] = None,
           cgroup: Optional[str] = DEFAULT_CGROUP) -> dict:
    """What runs: interfaces with our filters, cgroup hooks, and every
    destination's path set with counters (per path: packets, bytes, passive
    TCP signals). {"loaded": False} when nothing is pinned."""
    if not _pins_complete(pin_dir):
        return {"loaded": False}
    cgroup = cgroup2_root() if cgroup == DEFAULT_CGROUP else cgroup
    progs = _pinned_programs(pin_dir)
    with _netlink(progs, netns) as ipr:
        filters = {}
        if netns is None:                     # (a batch socket of this namespace)
            from argoctl import rtbatch
            sender = rtbatch.Sender()
            try:
                for _, ifname, name in filters_in_place(sender):
                    filters[ifname] = [name]
            finally:
                sender.close()
        else:
            for link in ipr.get_links():
                ours = _our_filters(ipr, link["index"])
                if ours:
                    filters[link.get_attr("IFLA_IFNAME")] = ours
        cg = bool(cgroup) and _cgroup_attached(progs, cgroup)
    with maps.Maps(pin_dir) as m:
        s = m.settings()
        by_dest: dict[int, list[str]] = {}
        for p, i in m.prefixes().items():
            by_dest.setdefault(i, []).append(p)
        dests = {}
        path_ids = set()
        for dest_id in m.dest_ids():
            gen, paths = m.pathset(dest_id)
            path_ids.update(p.path_id for p in paths)
            dests[dest_id] = {
                "prefixes": sorted(by_dest.get(dest_id, [])),
                "generation": gen,
                "paths": [{"path_id": p.path_id, "mark": p.mark, "weight": p.weight,
                           "up": p.up} for p in paths],
                "counters": maps.stats_dict(m.dest_stats(dest_id)),
            }
        paths_out = {pid: maps.stats_dict(m.path_stats(pid)) for pid in sorted(path_ids)}
    return {"loaded": True, "fwmark_mask": s.fwmark_mask, "lpm_epoch": s.lpm_epoch,
            "reroute": maps.reroute_on(s),
            "filters": filters, "cgroup_hooks": cg, "destinations": dests, "paths": paths_out}
