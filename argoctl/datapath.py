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

import errno
import os
import re
import socket
from importlib import resources
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Iterable, Optional

from argoctl import bpfsys, maps, names
from argoctl.config import DIRECT, Config

# The datapath's C sources are package data (argoctl/bpf), so a regular install
# has them too; ARGOCTL_BPF_DIR overrides for development.
BPF_DIR = FsPath(os.environ.get("ARGOCTL_BPF_DIR") or str(resources.files("argoctl") / "bpf"))
ENTRY_FILES = ("steer_tc.c", "passive_tc.c", "steer_sock.c", "steer_sockops.c")
BPF_FS_MAGIC = 0xCAFE4A11

# tc: our filters sit at this priority on clsact ingress, named
# "argoctl-<program>-<prog id>", so `detach` removes only ours and `attach`
# can tell whether an interface already runs the pinned program.
TC_PRIO = 7200
TC_HANDLE = 1
TC_INGRESS = 0xFFFFFFF2   # TC_H_CLSACT:TC_H_MIN_INGRESS
FILTER_PREFIX = "argoctl-"

SCHED_CLS = 3
CGROUP_SOCK_ADDR = 18
TC_PROGRAMS = ("steer_eth", "steer_l3", "passive_eth", "passive_l3")
SOCK_PROGRAMS = {
    "sock_connect4": bpfsys.CGROUP_INET4_CONNECT,
    "sock_connect6": bpfsys.CGROUP_INET6_CONNECT,
    "sock_sendmsg4": bpfsys.CGROUP_UDP4_SENDMSG,
    "sock_sendmsg6": bpfsys.CGROUP_UDP6_SENDMSG,
    "sock_ops": bpfsys.CGROUP_SOCK_OPS,
}
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
    max_dests: int = 131072
    max_prefixes_v4: int = 1048576
    max_prefixes_v6: int = 262144
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


def _fs_magic(path: str) -> int:
    """f_type of statfs(2) (os.statvfs does not expose it)."""
    import ctypes
    buf = ctypes.create_string_buffer(128)   # struct statfs; f_type is the first long
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(path.encode(), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs {path}: {os.strerror(err)}")
    return int.from_bytes(buf.raw[:8], "little")


def ensure_bpffs(directory: str) -> None:
    """Pins need a bpf filesystem. Mount one on `directory` if it is not one
    already (what iproute2 and Cilium do for /sys/fs/bpf)."""
    os.makedirs(directory, exist_ok=True)
    if _fs_magic(directory) == BPF_FS_MAGIC:
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


def in_init_netns() -> bool:
    me = os.stat("/proc/self/ns/net").st_ino
    try:
        return me == os.stat("/proc/1/ns/net").st_ino
    except OSError:   # pid 1 hidden (containers): a named namespace is not the host's
        try:
            entries = os.listdir("/run/netns")
        except OSError:
            return True
        return not any(os.stat(os.path.join("/run/netns", e)).st_ino == me for e in entries)


def default_pin_dir() -> str:
    """names.BPF_PIN_DIR for the host; a node living in a network namespace
    (`ip netns exec ... argoctl up`) gets a pin directory of its own."""
    if in_init_netns():
        return names.BPF_PIN_DIR
    return f"{names.BPF_PIN_DIR}-ns{os.stat('/proc/self/ns/net').st_ino}"


def _cgroup_path(cgroup: Optional[str]) -> Optional[str]:
    if cgroup == DEFAULT_CGROUP and not in_init_netns():
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


# -- tc --------------------------------------------------------------------

def _ipr(netns: Optional[str]):
    from pyroute2 import IPRoute
    return IPRoute(netns=netns) if netns else IPRoute()


def _filter_name(prog: str, prog_id: int) -> str:
    return f"{FILTER_PREFIX}{prog}-{prog_id}"


def _our_filters(ipr, ifindex: int) -> list[str]:
    """Names of our bpf filters on the interface's clsact ingress."""
    out = []
    try:
        flt = ipr.get_filters(index=ifindex, parent=TC_INGRESS)
    except Exception:
        return out
    for f in flt:
        opts = f.get_attr("TCA_OPTIONS")
        name = opts.get_attr("TCA_BPF_NAME") if opts is not None else None
        if name and name.startswith(FILTER_PREFIX) and (f["info"] >> 16) == TC_PRIO:
            out.append(name)
    return out


def _tc_attach(ipr, ifindex: int, prog: str, fd: int) -> bool:
    """Attach (or atomically replace) our filter; False if already in place."""
    want = _filter_name(prog, bpfsys.prog_info(fd).id)
    have = _our_filters(ipr, ifindex)
    if want in have:
        return False
    try:
        ipr.tc("add", "clsact", ifindex)
    except Exception as e:  # already there
        if getattr(e, "code", None) != errno.EEXIST:
            raise
    # "replace" swaps the program in one step: no packet sees no filter.
    ipr.tc("replace-filter", "bpf", ifindex, TC_HANDLE, fd=fd, name=want,
           parent=TC_INGRESS, prio=TC_PRIO, classid=1, direct_action=True,
           protocol=0x0003)
    return True


def _tc_detach_all(ipr) -> list[str]:
    """Remove our filters from every interface of the namespace."""
    removed = []
    for link in ipr.get_links():
        idx = link["index"]
        ours = _our_filters(ipr, idx)
        if ours:
            try:
                ipr.tc("del-filter", "bpf", idx, TC_HANDLE, parent=TC_INGRESS,
                       prio=TC_PRIO, protocol=0x0003)
            except Exception as e:
                if getattr(e, "code", None) not in (errno.ENOENT, errno.EINVAL):
                    raise
            removed.append(link.get_attr("IFLA_IFNAME"))
    return removed


def _link(ipr, ifname: str):
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        return None
    return ipr.get_links(found[0])[0]


@contextmanager
def _netlink(progs: dict[str, int], netns: Optional[str]):
    """A netlink socket for the namespace; closes it and the program fds after."""
    ipr = None
    try:
        ipr = _ipr(netns)
        yield ipr
    finally:
        if ipr is not None:
            ipr.close()
        for fd in progs.values():
            os.close(fd)


# -- cgroup ----------------------------------------------------------------

def _cgroup_attach(progs: dict[str, int], cgroup: str) -> None:
    cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n, atype in SOCK_PROGRAMS.items():
            pid = bpfsys.prog_info(progs[n]).id
            if pid in bpfsys.prog_query(cg, atype):
                continue
            bpfsys.prog_attach(progs[n], cg, atype)
    finally:
        os.close(cg)


def _cgroup_detach(progs: dict[str, int], cgroup: str) -> None:
    if not os.path.isdir(cgroup):
        return
    cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n, atype in SOCK_PROGRAMS.items():
            if n not in progs:
                continue
            pid = bpfsys.prog_info(progs[n]).id
            if pid in bpfsys.prog_query(cg, atype):
                bpfsys.prog_detach(progs[n], cg, atype)
    finally:
        os.close(cg)


def _cgroup_attached(progs: dict[str, int], cgroup: str) -> bool:
    try:
        cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        return all(bpfsys.prog_info(progs[n]).id in bpfsys.prog_query(cg, a)
                   for n, a in SOCK_PROGRAMS.items() if n in progs)
    finally:
        os.close(cg)


# -- the API the control plane calls ----------------------------------------

@dataclass
class AttachResult:
    compiled: bool                       # False: adopted the running datapath
    steered: list[str] = field(default_factory=list)    # interfaces with steer_*
    passive: list[str] = field(default_factory=list)    # interfaces with passive_*
    newly_attached: list[str] = field(default_factory=list)
    cgroup: Optional[str] = None


def _route_ifnames(ipr, addresses) -> list[str]:
    """Devices the main table sends these addresses out of: where replies for
    the direct path (and tunnel underlay traffic) come back in."""
    out = []
    for a in addresses:
        try:
            r = ipr.route("get", dst=str(a))
        except Exception:   # unreachable from here: nothing to watch
            continue
        for msg in r:
            oif = msg.get_attr("RTA_OIF")
            if oif:
                name = _ifname(ipr, oif)
                if name != "lo" and name not in out:
                    out.append(name)
    return out


def _ifname(ipr, index: int) -> str:
    return ipr.get_links(index)[0].get_attr("IFLA_IFNAME")


def attach(config: Config, pin_dir: str = names.BPF_PIN_DIR, netns: Optional[str] = None,
           cgroup: Optional[str] = DEFAULT_CGROUP, sizes: Sizes = Sizes()) -> AttachResult:
    """Load (or adopt) the datapath and attach it: steering on the node's
    steer_interfaces, passive signals on its tunnels and on the devices routing to its
    peers and destinations, the
    socket hooks on `cgroup` (None: no local steering). Idempotent."""
    cgroup = _cgroup_path(cgroup)
    if cgroup is not None and not os.path.isdir(cgroup):
        raise DatapathError(f"cgroup {cgroup} does not exist")
    with _netlink({}, netns) as ipr:   # check first: a bad config loads nothing
        missing = [i for i in config.node.steer_interfaces if _link(ipr, i) is None]
    if missing:
        raise DatapathError(f"steer interface(s) not found: {', '.join(missing)}")
    compiled, progs = ensure_loaded(pin_dir, sizes)
    res = AttachResult(compiled=compiled, cgroup=cgroup)
    with _netlink(progs, netns) as ipr:
        with maps.Maps(pin_dir) as m:
            s = m.settings()
            if (s.fwmark_mask != config.routing.fwmark_mask or s.abi != maps.ABI
                    or maps.reroute_on(s) != config.policy.reroute):
                m.write_settings(config.routing.fwmark_mask, reroute=config.policy.reroute)
        for ifname in config.node.steer_interfaces:
            link = _link(ipr, ifname)
            prog = "steer_eth" if link["ifi_type"] == ARPHRD_ETHER else "steer_l3"
            if _tc_attach(ipr, link["index"], prog, progs[prog]):
                res.newly_attached.append(ifname)
            res.steered.append(ifname)
        passive = [names.link_name(p.name) for p in config.peers]
        watch = [p.address for p in config.peers]
        watch += [d.prefixes[0].network_address for d in config.destinations if d.prefixes]
        passive += [i for i in _route_ifnames(ipr, watch) if i not in passive]
        for ifname in passive:
            link = _link(ipr, ifname)
            if link is None or ifname in res.steered:
                continue
            prog = "passive_eth" if link["ifi_type"] == ARPHRD_ETHER else "passive_l3"
            if _tc_attach(ipr, link["index"], prog, progs[prog]):
                res.newly_attached.append(ifname)
            res.passive.append(ifname)
        if cgroup:
            _cgroup_attach(progs, cgroup)
    return res


def config_pathsets(config: Config) -> dict[int, list[maps.Path]]:
    """Static path sets from the config: its weights, else everything on the
    first path of the preference order (the others up, weight 0)."""
    out = {}
    for d in config.destinations:
        weights = d.weights or tuple(1 if i == 0 else 0 for i in range(len(d.paths)))
        out[d.id] = [maps.Path(path_id=config.path_id(p), mark=config.routing.mark(config.path_id(p)),
                               weight=w) for p, w in zip(d.paths, weights)]
    return out


def program(config: Config, pin_dir: str = names.BPF_PIN_DIR,
            pathsets: Optional[dict[int, list[maps.Path]]] = None) -> dict[str, int]:
    """Make the maps hold exactly the config's destinations: prefixes, then
    path sets (new prefixes point at a path set that already exists), then
    stale entries removed. Returns counts."""
    sets = pathsets if pathsets is not None else config_pathsets(config)
    want_prefixes = {str(p): d.id for d in config.destinations for p in d.prefixes}
    with maps.Maps(pin_dir) as m:
        m.set_pathsets(sets)
        have = m.prefixes()
        changed = [(p, i) for p, i in want_prefixes.items() if have.get(p) != i]
        stale = [p for p in have if p not in want_prefixes]
        if changed:
            m.set_prefixes(changed, bump_epoch=not stale)
        if stale:
            m.remove_prefixes(stale)
        stale_ids = [i for i in m.dest_ids() if i not in sets]
        for i in stale_ids:
            m.remove_destination(i)
    return {"destinations": len(sets), "prefixes_written": len(changed),
            "prefixes_removed": len(stale), "destinations_removed": len(stale_ids)}


def detach(pin_dir: str = names.BPF_PIN_DIR, netns: Optional[str] = None,
           cgroup: Optional[str] = DEFAULT_CGROUP) -> dict:
    """Remove our tc filters, cgroup hooks and pins. Safe to run twice."""
    cgroup = cgroup2_root() if cgroup == DEFAULT_CGROUP else cgroup
    if cgroup is not None and not os.path.isdir(cgroup):
        cgroup = None
    progs = _pinned_programs(pin_dir) if os.path.isdir(pin_dir) else {}
    with _netlink(progs, netns) as ipr:
        removed = _tc_detach_all(ipr)
        if cgroup:
            _cgroup_detach(progs, cgroup)
    unpinned = []
    if os.path.isdir(pin_dir):
        for entry in sorted(os.listdir(pin_dir)):
            os.unlink(os.path.join(pin_dir, entry))
            unpinned.append(entry)
        os.rmdir(pin_dir)
    return {"filters_removed": removed, "unpinned": unpinned}


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


def up(config: Config, pin_dir: Optional[str] = None, cgroup: Optional[str] = DEFAULT_CGROUP) -> dict:
    """What `argoctl up` does after the tunnels and rules: attach (or adopt) and
    program the config's destinations with its static weights."""
    pin_dir = pin_dir or default_pin_dir()
    res = attach(config, pin_dir=pin_dir, cgroup=cgroup)
    counts = program(config, pin_dir=pin_dir)
    return {"pin_dir": pin_dir, "compiled": res.compiled, "steered": res.steered,
            "passive": res.passive, "newly_attached": res.newly_attached,
            "cgroup": res.cgroup, **counts}


def down(pin_dir: Optional[str] = None) -> dict:
    return detach(pin_dir or default_pin_dir())


def status_table(st: dict, path_name: dict[int, str]):
    """A rich table: each destination's path set with its counters."""
    from rich.table import Table
    t = Table(title="datapath: destinations")
    for col in ("id", "prefixes", "paths (weight, state)", "packets", "bytes"):
        t.add_column(col)
    for dest_id, d in sorted(st["destinations"].items()):
        paths = ", ".join(f"{path_name.get(p['path_id'], p['path_id'])} {p['weight']}"
                          f"{'' if p['up'] else ' DOWN'}" for p in d["paths"])
        t.add_row(str(dest_id), " ".join(d["prefixes"]), paths,
                  str(d["counters"]["packets"]), str(d["counters"]["bytes"]))
    p = Table(title="datapath: paths (protective reroute %s)"
                    % ("on" if st.get("reroute") else "off"))
    for col in ("path", "packets", "bytes", "SYNs", "SYN-ACKs", "handshake RTT", "sockets",
                "rerouted away"):
        p.add_column(col)
    for pid, c in sorted(st["paths"].items()):
        rtt = f"{c['rtt_sum_ns'] / c['rtt_count'] / 1e6:.1f} ms" if c["rtt_count"] else "-"
        p.add_row(str(path_name.get(pid, pid)), str(c["packets"]), str(c["bytes"]),
                  str(c["syns"]), str(c["synacks"]), rtt, str(c["sockets"]),
                  str(c["reroutes"]))
    return t, p


def path_names(config: Config) -> dict[int, str]:
    """path id -> name, for rendering status."""
    out = {names.DIRECT_PATH_ID: DIRECT}
    out.update({p.id: p.name for p in config.peers})
    return out
