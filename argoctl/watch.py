"""The daemon's watch over what it owns: kernel objects changed behind its back
are noticed, the paths riding on them marked down at once, and the objects put
back through the same plan/netlink code as `up`.

Two triggers, one check:
  - rtnetlink events (links, addresses, routes, rules, tc) on a socket of the
    daemon's namespace wake it at once: a deleted tunnel, route or rule is seen
    within milliseconds, not at the next probe timeout;
  - every WATCH_INTERVAL_S a full check, which also covers what sends no
    rtnetlink event: the nft table, the bpffs pins, the steering filters.
The check is `up --dry-run` (plan.desired vs netlink.read_owned): any op it
plans is drift. Each op names the path it concerns (a tunnel's link, address,
sysctls, its table's routes, its rule); those paths go down at once
(Engine.on_path_lost) and their destinations are decided now, then the repair
runs (`up`, pins put back, the datapath re-attached). A repaired path is
trusted again only by the usual recovery (recover_probes replies in a row,
then hold-down): the engine never learns that the repair happened.

The audits run on one worker thread (netlink dumps and nft take milliseconds,
and under TCG much more), never on the event loop: probes keep their times.
That thread enters the namespace itself (setns) and never lets pyroute2 fork a
helper into it (`IPRoute(netns=...)`): a forked child inherits the loop's
signal wake-up socket, and the SIGTERM that ends the helper would reach the
daemon's loop as its own SIGTERM and stop it, silently, with status 0.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from argoctl import bpfsys, home, maps, names
from argoctl import datapath as dp
from argoctl import hooks as hk
from argoctl.config import DIRECT
from argoctl.plan import Address, Link, Route, Rule, Sysctl

log = logging.getLogger("argoctl.daemon")

WATCH_INTERVAL_S = 5.0       # full check (nft, pins, filters) at least this often
NETLINK_ROUTE = 0
# rtnetlink multicast groups (linux/rtnetlink.h RTMGRP_*: the legacy bits) ...
GROUPS = (0x1        # LINK
          | 0x8      # TC (filters)
          | 0x10     # IPV4_IFADDR
          | 0x40     # IPV4_ROUTE
          | 0x80     # IPV4_RULE
          | 0x100    # IPV6_IFADDR
          | 0x400)   # IPV6_ROUTE
RTNLGRP_IPV6_RULE = 19   # ... and IPv6 rules, which have no legacy bit: joined by number
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1


def paths_of(ops, cfg) -> set[str]:
    """The paths whose kernel objects these ops touch (the drop rule is no path's)."""
    by_dev = {names.link_name(p.name): p.name for p in cfg.peers}
    by_id = {p.id: p.name for p in cfg.peers}
    by_id[names.DIRECT_PATH_ID] = DIRECT     # its rule gone, direct's marks hit the drop rule
    r = cfg.routing
    out = set()
    for op in ops:
        o = op.obj
        name = None
        if isinstance(o, Link):
            name = by_dev.get(o.name)
        elif isinstance(o, (Address, Sysctl)):
            name = by_dev.get(o.dev)
        elif isinstance(o, Route):
            name = by_id.get(o.table - r.table_base)
        elif isinstance(o, Rule) and o.action == "table":
            name = by_id.get(o.priority - r.rule_priority_base)
        if name is not None:
            out.add(name)
    return out


RTM_DELLINK, RTM_DELROUTE, RTM_DELRULE = 17, 25, 33
RTN_UNICAST = 1


def deleted_paths(data: bytes, cfg) -> set[str]:
    """The paths a batch of rtnetlink events says lost an object at once: a
    tunnel device, a tunnel route of ours (not the drop under it), a path's
    rule. Acted on before the check (which takes long on a slow host) so the
    path is down within milliseconds, not after a dump. A batch pyroute2
    cannot parse names none: the check still sees it."""
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl
    try:
        msgs = list(MarshalRtnl().parse(data))
    except Exception:
        return set()
    by_dev = {names.link_name(p.name): p.name for p in cfg.peers}
    by_id = {p.id: p.name for p in cfg.peers}
    r = cfg.routing
    out = set()
    for m in msgs:
        kind = m["header"]["type"]
        if kind == RTM_DELLINK:
            name = by_dev.get(m.get_attr("IFLA_IFNAME"))
        elif kind == RTM_DELROUTE and m["proto"] == names.RTPROT_ARGOCTL \
                and m["type"] == RTN_UNICAST:
            name = by_id.get((m.get_attr("RTA_TABLE") or m["table"]) - r.table_base)
        elif kind == RTM_DELRULE:
            prio = (m.get_attr("FRA_PRIORITY") or 0) - r.rule_priority_base
            name = DIRECT if prio == names.DIRECT_PATH_ID else by_id.get(prio)
        else:
            continue
        if name is not None:
            out.add(name)
    return out


# -- the datapath's pins and filters (what the periodic check looks at) ----------

def missing_pins(pin_dir: str) -> list[str]:
    """Pin names (maps, prog_*) absent from pin_dir."""
    progs = list(hk.TC_PROGRAMS) + list(hk.SOCK_PROGRAMS)
    want = list(maps.MAP_NAMES) + ["prog_" + p for p in progs]
    return [n for n in want if not os.path.exists(os.path.join(pin_dir, n))]


def repin(pin_dir: str, map_fds: dict[str, int]) -> list[str]:
    """Pin again what was unpinned under a running datapath: maps from the fds a
    daemon holds, tc programs from the filters running them (their names carry
    the program id). Returns what was pinned. A program neither pinned nor
    attached anywhere is gone; `attach` then compiles it onto the same maps."""
    os.makedirs(pin_dir, exist_ok=True)
    done = []
    for name, fd in map_fds.items():
        path = os.path.join(pin_dir, name)
        if not os.path.exists(path):
            bpfsys.obj_pin(fd, path)
            done.append(name)
    progs = [p for p in hk.TC_PROGRAMS if not os.path.exists(dp._prog_pin(pin_dir, p))]
    if progs:
        ids: dict[str, int] = {}
        with hk._netlink({}, None) as ipr:      # (the caller's namespace: see above)
            for link in ipr.get_links():
                for fname in hk._our_filters(ipr, link["index"]):
                    prog, _, pid = fname[len(hk.FILTER_PREFIX):].rpartition("-")
                    if pid.isdigit():
                        ids[prog] = int(pid)
        for p in progs:
            if p in ids:
                fd = bpfsys.prog_fd_by_id(ids[p])
                try:
                    bpfsys.obj_pin(fd, dp._prog_pin(pin_dir, p))
                finally:
                    os.close(fd)
                done.append("prog_" + p)
    return done


def missing_filters(config) -> list[str]:
    """steer_interfaces of the config without our steering filter (in the
    caller's namespace)."""
    out = []
    with hk._netlink({}, None) as ipr:
        for ifname in config.node.steer_interfaces:
            link = hk._link(ipr, ifname)
            if link is not None and not any(f.startswith(hk.FILTER_PREFIX + "steer_")
                                            for f in hk._our_filters(ipr, link["index"])):
                out.append(ifname)
    return out



class Watch:
    """A cell of the daemon: start() in the loop's thread (inside the node's
    namespace), stop() when the loop ends."""

    def __init__(self, daemon, interval: float = WATCH_INTERVAL_S):
        self.d = daemon
        self.interval = interval
        self.sock: Optional[socket.socket] = None
        self.loop = None
        self.pool: Optional[ThreadPoolExecutor] = None
        self._busy = False
        self._again = None        # None: nothing queued; else "full" wanted?
        self._timer = None
        self.audits = 0
        self.repairs = 0
        self.events = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self, loop) -> "Watch":
        self.loop = loop
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=f"argoctl-watch-{self.d.cfg.node.name}")
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK
                          | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((0, GROUPS))
            s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_IPV6_RULE)
        except OSError:
            s.close()
            raise
        self.sock = s
        loop.add_reader(s.fileno(), self._readable)
        self._timer = loop.call_later(self.interval, self._periodic)
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.sock is not None:
            try:
                self.loop.remove_reader(self.sock.fileno())
            except Exception:
                pass
            self.sock.close()
            self.sock = None
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    # -- triggers (loop thread) --------------------------------------------------

    def paths_lost(self, paths) -> None:
        """These paths' kernel objects went: down now (Engine.on_path_lost) for
        every destination using them, and those decided now."""
        d, now, dests = self.d, self.d.clock(), set()
        for p in paths:
            dests.update(d.engine.on_path_lost(p, now))
        if dests:
            d._decide_some(dests)

    def _readable(self) -> None:
        got, deleted = False, set()
        while self.sock is not None:
            try:
                data = self.sock.recv(1 << 16)
                if not data:
                    break
                got = True
                deleted |= deleted_paths(data, self.d.cfg)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:     # events lost: check everything
                    got = True
                    continue
                break
        if deleted:      # down now; the check below confirms it and repairs
            log.warning(json.dumps({"event": "owned_object_deleted", "node": self.d.cfg.node.name,
                                    "paths_down": sorted(deleted)}))
            self.paths_lost(deleted)
        if got:
            self.events += 1
            self.request(full=False)

    def _periodic(self) -> None:
        self._timer = self.loop.call_later(self.interval, self._periodic)
        self.request(full=True)

    def request(self, full: bool) -> None:
        """Check now (or right after the check or repair under way)."""
        if self.pool is None:
            return
        if self._busy:
            self._again = bool(self._again) or full
            return
        self._busy = True
        fut = self.loop.run_in_executor(self.pool, self._audit, full)
        fut.add_done_callback(self._audited)

    # -- the check (worker thread) -----------------------------------------------

    def _audit(self, full: bool):
        with home.netns(self.d.opts.ns):
            return self._audit_here(full)

    def _audit_here(self, full: bool):
        from argoctl import apply
        d = self.d
        ops = apply.up(d.cfg, ns=d.opts.ns, dry_run=True, run_dir=d.run_dir,
                       stages=("links", "nft"), lock=False).ops
        pins = filters = []
        if full:
            pins = missing_pins(d.home.pin_dir)
            filters = missing_filters(d.cfg)
        return ops, pins, filters

    def _repair(self, ops, pins, filters) -> dict:
        with home.netns(self.d.opts.ns):
            return self._repair_here(ops, pins, filters)

    def _repair_here(self, ops, pins, filters) -> dict:
        from argoctl import apply, datapath
        d = self.d
        t0 = time.monotonic()
        out = {}
        if ops:
            # (the daemon holds the namespace's lock: this is its own `up`)
            ctx = apply.up(d.cfg, ns=d.opts.ns, run_dir=d.run_dir, stages=("links", "nft"),
                           lock=False)
            out["ops"] = len(ctx.ops)
        if pins and d.maps is not None:
            out["repinned"] = repin(d.home.pin_dir, dict(d.maps.fd))
        # a recreated tunnel has no passive filter yet; a lost steering filter
        # leaves the LAN unsteered: attach is idempotent
        if any(isinstance(op.obj, Link) for op in ops) or pins or filters:
            res = datapath.attach(d.cfg, d.home.pin_dir, netns=None, cgroup=d.opts.cgroup)
            out["attached"] = res.newly_attached
        out["seconds"] = round(time.monotonic() - t0, 3)
        return out

    # -- results (loop thread) ------------------------------------------------------

    def _audited(self, fut) -> None:
        self.audits += 1
        try:
            ops, pins, filters = fut.result()
        except Exception as e:   # the next trigger tries again
            log.error(json.dumps({"event": "watch_failed", "error": str(e)}))
            self._done()
            return
        if not (ops or pins or filters):
            self._done()
            return
        lost = paths_of(ops, self.d.cfg)
        log.warning(json.dumps({
            "event": "owned_state_changed", "node": self.d.cfg.node.name,
            "missing_or_changed": [str(op) for op in ops], "pins_missing": pins,
            "unsteered": filters, "paths_down": sorted(lost)}))
        if lost:
            self.paths_lost(lost)
        fut2 = self.loop.run_in_executor(self.pool, self._repair, ops, pins, filters)
        fut2.add_done_callback(self._repaired)

    def _repaired(self, fut) -> None:
        try:
            out = fut.result()
        except Exception as e:
            log.error(json.dumps({"event": "repair_failed", "node": self.d.cfg.node.name,
                                  "error": str(e)}))
        else:
            self.repairs += 1
            log.warning(json.dumps({"event": "repaired", "node": self.d.cfg.node.name, **out}))
        self._done()

    def _done(self) -> None:
        self._busy = False
        if self._again is not None:
            full, self._again = self._again, None
            self.request(full)
