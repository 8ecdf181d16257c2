"""Reading the kernel state argoctl owns, and applying plan ops to it with pyroute2.

Ownership (names.py): links whose name has the prefix AND whose alias matches;
routes with protocol 176 in our table range; rules in our priority range whose only
selector is an fwmark under our mask and that look up one of our tables (or main
with the direct mark); the nft table inet argoctl;
per-device sysctls of our links; global forwarding sysctls only while we hold
their saved prior values. Nothing else is read-modified.

`Applier.apply` journals the inverse of every op it completes; on any exception it
undoes the journal in reverse, so the host returns to its state before the call.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Optional

from argoctl import names
from argoctl.rtbatch import Snapshot
from argoctl.sysctl import (IPV6_FORWARDING, accept_ra_1 as _accept_ra_1,
                            device_forwarding as _device_forwarding,
                            read as _sysctl_read, write as _sysctl_write)
# (the run files `up` keeps, saved sysctls and ranges, are runfiles.py's; re-exported)
from argoctl.runfiles import ACCEPT_RA as _ACCEPT_RA, DEVICES as _DEVICES
from argoctl.runfiles import Saved  # noqa: F401  (Applier keeps one)
from argoctl.config import Routing
from argoctl.rtbatch import FIB_RULE_INVERT, FR_ACT_BLACKHOLE, RTN_TYPES
from argoctl.wireguard import read_link as _read_wireguard, wg_info  # noqa: F401
from argoctl.plan import (GLOBAL_SYSCTLS, Address, Link, Nft, Op, PlanError, Route, Rule, State,
                          Sysctl)

RT_TABLE_MAIN = 254
GRE_KEY_FLAG = 0x2000
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


class ApplyError(Exception):
    """An op failed; the journal was rolled back (rollback_errors lists any undo that failed)."""

    def __init__(self, message: str, rollback_errors=()):
        self.rollback_errors = list(rollback_errors)
        if self.rollback_errors:
            message += "; ROLLBACK INCOMPLETE: " + "; ".join(self.rollback_errors)
        super().__init__(message)


class InjectedFailure(Exception):
    """Raised by the failure-injection hook (fail_at / ARGOCTL_FAIL_AT)."""


# ---------------------------------------------------------------------------- namespaces

from argoctl.home import netns  # noqa: E402,F401  (entering a namespace: home.py)


def state_dir(ns: Optional[str], run_dir: str = names.RUN_DIR) -> str:
    """Where saved sysctl values, owned ranges and intents live (home.py decides)."""
    from argoctl import home
    return home.locate(ns, run_dir).state_dir


# ---------------------------------------------------------------------------- helpers

def _family(addr: str) -> int:
    return ipaddress.ip_address(addr).version


# ---------------------------------------------------------------------------- env for plan

class KernelEnv:
    """What plan.desired needs from the host: underlay MTU and keys."""

    def __init__(self, ipr, create_keys: bool = True, prefetch=()):
        self.ipr = ipr
        self.create_keys = create_keys   # False: a dry run writes no key file
        self._mtu: dict[int, int] = {}   # by ifindex: peers share a few underlay devices
        # the peers' addresses: their routes are looked up in one batch (rtbatch) at
        # the first question (a `route get` each, ~20-30 ms a request under TCG)
        self._prefetch = list(prefetch)
        self._routes: dict = {}

    def _route(self, address):
        if self._prefetch:
            from argoctl import rtbatch
            sender = rtbatch.Sender()
            try:
                self._routes.update(zip(self._prefetch, sender.route_get(self._prefetch)))
            finally:
                sender.close()
            self._prefetch = []
        route = self._routes.get(address)
        if route is None:
            return self.ipr.route("get", dst=str(address))[0]
        if isinstance(route, Exception):
            raise route
        return route

    def underlay_mtu(self, address) -> int:
        try:
            route = self._route(address)
        except Exception as e:  # NetlinkError ENETUNREACH etc.
            raise PlanError(f"no underlay route to peer address {address}: {e}") from None
        oif = route.get_attr("RTA_OIF")
        if oif not in self._mtu:
            self._mtu[oif] = self.ipr.get_links(oif)[0].get_attr("IFLA_MTU")
        mtu = self._mtu[oif]
        metrics = route.get_attr("RTA_METRICS")
        if metrics is not None and metrics.get_attr("RTAX_MTU"):
            mtu = min(mtu, metrics.get_attr("RTAX_MTU"))
        return mtu

    def private_key(self, path: str) -> bytes:
        from argoctl import keys
        try:
            private, created = keys.ensure_private_key(path, create=self.create_keys)
        except keys.KeyFileError as e:
            raise PlanError(str(e)) from None
        if created and self.create_keys:
            import logging
            logging.getLogger("argoctl").warning(
                "created WireGuard private key file %s (mode 0600); this node's public key, "
                "for its peers' configs: %s", keys.redact(path),
                keys.encode(keys.public_key(private)))
        return private

    def public_key(self, private: bytes) -> str:
        from argoctl import keys
        return keys.encode(keys.public_key(private))


# ---------------------------------------------------------------------------- reading

def _owned_links(snap: Snapshot) -> dict[str, tuple[int, object]]:
    out = {}
    for msg in snap.links():
        name = msg.get_attr("IFLA_IFNAME")
        if not name.startswith(names.LINK_PREFIX):
            continue
        if msg.get_attr("IFLA_IFALIAS") != names.ALIAS_PREFIX + name[len(names.LINK_PREFIX):]:
            continue  # right prefix, but not ours: leave it alone
        out[name] = (msg["index"], msg)
    return out


def _read_link(msg, wg) -> Link:
    """`wg`: zero-argument callable returning a WireGuard socket (opened only if needed)."""
    name = msg.get_attr("IFLA_IFNAME")
    mtu = msg.get_attr("IFLA_MTU")
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info else "unknown"
    data = info.get_attr("IFLA_INFO_DATA") if info else None
    if kind in ("gre", "ip6gre") and data is not None:
        ikey = data.get_attr("IFLA_GRE_IKEY")
        iflags = data.get_attr("IFLA_GRE_IFLAGS") or 0
        return Link(name=name, kind=kind, mtu=mtu,
                    local=str(ipaddress.ip_address(data.get_attr("IFLA_GRE_LOCAL"))),
                    remote=str(ipaddress.ip_address(data.get_attr("IFLA_GRE_REMOTE"))),
                    gre_key=ikey if (iflags & GRE_KEY_FLAG or ikey) else None,
                    ttl=data.get_attr("IFLA_GRE_TTL"))
    if kind == "wireguard":
        return _read_wireguard(name, mtu, wg())
    return Link(name=name, kind=kind, mtu=mtu)


def _addresses(msgs, dev: str) -> list[Address]:
    out = []
    for msg in msgs:
        family = 4 if msg["family"] == socket.AF_INET else 6
        local = msg.get_attr("IFA_LOCAL")
        address = msg.get_attr("IFA_ADDRESS")
        mine = local or address
        if family == 6 and ipaddress.ip_address(mine).is_link_local:
            continue  # the kernel's own link-local, not argoctl's
        peer = address if local and address != local else ""
        out.append(Address(dev, family, mine, peer))
    return out


def _route_table(msg) -> int:
    return msg.get_attr("RTA_TABLE") or msg["table"]


def _our_tables(r: Routing) -> range:
    return range(r.table_base + 1, r.table_base + names.MAX_PATH_ID + 1)


def _our_priorities(r: Routing) -> range:
    return range(r.rule_priority_base, r.rule_priority_base + names.DROP_RULE_OFFSET + 1)


def read_owned(ipr, routing: Routing = Routing(), wg=None, nft=None,
               saved: Optional[dict] = None, snap: Optional[Snapshot] = None) -> State:
    """Everything of ours in the current namespace, as a State (see module doc).
    `snap`: the call's dumps (None: taken here, for this read alone)."""
    if snap is None:
        with Snapshot() as snap:
            return read_owned(ipr, routing, wg, nft, saved, snap)
    links = _owned_links(snap)
    by_index = {idx: name for name, (idx, _) in links.items()}
    addr_msgs = {}
    if links:   # one dump for all links, not one per link (100 peers: 100 dumps)
        for msg in snap.addresses():
            addr_msgs.setdefault(msg["index"], []).append(msg)
    st_links, addrs, sysctls = [], [], []
    for name, (idx, msg) in links.items():
        st_links.append(_read_link(msg, wg))
        addrs += _addresses(addr_msgs.get(idx, []), name)
        for key in ("rp_filter", "promote_secondaries", "forwarding"):
            path = f"net/ipv4/conf/{name}/{key}"
            value = _sysctl_read(path)
            if value is not None:
                sysctls.append(Sysctl(path, value))
    for path in (saved or {}):
        value = _sysctl_read(path)
        if path in GLOBAL_SYSCTLS and value is not None:
            sysctls.append(Sysctl(path, value))
    tables = _our_tables(routing)
    routes = []
    for family, af in FAMILIES.items():
        # protocol 176 only, filtered in the kernel: the main and local tables (a
        # local route per address, a multicast one per device) are not even sent
        for msg in snap.routes(af, names.RTPROT_ARGOCTL):
            if _route_table(msg) not in tables:
                continue
            dst = ("default" if msg["dst_len"] == 0
                   else f"{msg.get_attr('RTA_DST')}/{msg['dst_len']}")
            rtype = RTN_TYPES.get(msg["type"], f"type{msg['type']}")
            if rtype != "unicast":
                routes.append(Route(family, _route_table(msg), dst, "", rtype,
                                    msg.get_attr("RTA_PRIORITY") or 0))
                continue
            dev = by_index.get(msg.get_attr("RTA_OIF"), f"if{msg.get_attr('RTA_OIF')}")
            routes.append(Route(family, _route_table(msg), dst, dev))
    prios = _our_priorities(routing)
    direct_mark = routing.mark(names.DIRECT_PATH_ID)
    rules = []
    for family, af in FAMILIES.items():
        for msg in snap.rules(af):
            prio = msg.get_attr("FRA_PRIORITY") or 0
            table = msg.get_attr("FRA_TABLE") or msg["table"]
            mark = msg.get_attr("FRA_FWMARK") or 0
            mask = msg.get_attr("FRA_FWMASK")
            # Ours: in our priority range, an fwmark selector with our mask and nothing
            # else (a user's rule there with a from/to/iif selector is left alone).
            if prio not in prios or mask != routing.fwmark_mask or msg["src_len"] or \
                    msg["dst_len"] or msg.get_attr("FRA_IIFNAME") or msg.get_attr("FRA_OIFNAME"):
                continue
            if prio == routing.priority(names.DROP_RULE_OFFSET):
                if msg["action"] == FR_ACT_BLACKHOLE and msg["flags"] & FIB_RULE_INVERT \
                        and not mark:
                    rules.append(Rule(family, prio, 0, mask, 0, "blackhole"))
                continue
            if table in tables or (table == RT_TABLE_MAIN and mark == direct_mark):
                rules.append(Rule(family, prio, mark, mask, table))
    nfts = ()
    if nft is not None:
        t = nft.read()
        nfts = (t,) if t is not None else ()
    return State(links=tuple(st_links), sysctls=tuple(sysctls), addresses=tuple(addrs),
                 routes=tuple(routes), rules=tuple(rules), nft=nfts)


# ---------------------------------------------------------------------------- applying

@dataclass
class Result:
    ops: list
    writes: int = 0            # netlink messages (WireGuard genl too) + nft batches + sysctls
    netlink_writes: int = 0
    nft_writes: int = 0
    sysctl_writes: int = 0


class Applier:
    """Executes ops in one namespace (the caller is already inside it)."""

    def __init__(self, ipr, wg_factory, nft, saved: Saved, intents=None, step=None):
        self.ipr = ipr
        self.intents = intents        # intent.Intents: links being created (None: not kept)
        # step(what): called before every kernel write (failure injection, SIGKILL tests)
        self.step = step or (lambda what: None)
        self._wg_factory = wg_factory
        self._wg = None
        self._sender = None           # rtbatch.Sender, opened at the first batch
        self.nft = nft
        self.saved = saved
        self.netlink_writes = 0
        self.sysctl_writes = 0
        self.journal: list[Op] = []
        self._ifindex: dict[str, int] = {}

    @property
    def wg(self):
        if self._wg is None:
            self._wg = self._wg_factory()
        return self._wg

    def _nl(self, fn, *args, **kw):
        self.netlink_writes += 1
        return fn(*args, **kw)

    def _index(self, name: str) -> int:
        if name not in self._ifindex:   # cached: a lookup per op dominated large applies
            try:    # (an ioctl in this namespace; pyroute2's link_lookup was ~10 ms in TCG)
                self._ifindex[name] = socket.if_nametoindex(name)
            except OSError:
                raise ApplyError(f"link {name} does not exist") from None
        return self._ifindex[name]

    # -- links
    def _links_add(self, ops: list[Op], first: int, journal: list[Op]) -> None:
        """Devices created. The kernel ignores IFLA_IFALIAS when it creates a device,
        so the intent journal takes their names first (one write): a kill before the
        alias leaves devices `up`/`down` know. A step per device, then all are
        created in one batch (rtbatch: a pyroute2 request each was ~14 ms under
        TCG); their indexes are looked up by name; WireGuard ones are configured;
        one batch gives them our alias and brings them up. Any failure deletes every device of
        the group that was made (none has our alias yet) before it propagates."""
        from argoctl import rtbatch
        links = [op.obj for op in ops]
        if self.intents is not None:
            self.intents.add_link(*[l.name for l in links])
        made: list[Link] = []
        k = first
        try:
            for k, l in enumerate(links[1:], first + 1):
                self.step(str(ops[k - first]))          # (apply ran the first one's)
            k = first
            outcomes = self.sender.run([rtbatch.link_add(l.name, l.kind, l.mtu, link_data(l))
                                        for l in links])
            self.netlink_writes += len(links)
            made = [l for l, err in zip(links, outcomes) if err is None]
            for k, err in enumerate(outcomes, first):   # (the first failure raises)
                if err is not None:
                    raise err
            k = first
            # their indexes by name (an ioctl each, in this namespace), not from a
            # link dump that pyroute2 decodes whole (~40 attributes a device)
            index = {l.name: socket.if_nametoindex(l.name) for l in made}
            for l in made:
                self._ifindex[l.name] = index[l.name]
                if l.kind == "wireguard":
                    self.step(f"configure {l.name}")
                    self._wg_configure(l, None)
            self.step(f"alias {links[0].name}" + (f" (and {len(links) - 1} more)"
                                                  if len(links) > 1 else ""))
            outcomes = self.sender.run([rtbatch.link_up(index[l.name], l.alias) for l in made])
            self.netlink_writes += len(made)
            for k, err in enumerate(outcomes, first):
                if err is not None:
                    raise err
        except BaseException as e:
            for l in made:
                self._ifindex.pop(l.name, None)
                try:
                    self.ipr.link("del", ifname=l.name)
                except Exception:
                    pass
            if self.intents is not None:    # (one whose creation failed is not ours:
                self.intents.done_link(*[      # a user's device of that name stays)
                    l.name for l in links
                    if l not in made or not self.ipr.link_lookup(ifname=l.name)])
            if isinstance(e, Exception) and not isinstance(e, InjectedFailure):
                raise ApplyError(f"step {k} failed: {ops[k - first]}: {_reason(e)}") from e
            raise
        if self.intents is not None:
            self.intents.done_link(*[l.name for l in links])
        journal += [op.inverse() for op in ops]

    def _wg_configure(self, l: Link, old: Optional[Link]) -> None:
        from argoctl import keys
        kw = {}
        if old is None or old.public_key != l.public_key:
            kw["private_key"] = keys.encode(l.private_key)
        if old is None or old.listen_port != l.listen_port:
            kw["listen_port"] = l.listen_port or 0
        peer_changed = old is None or (old.peer_public_key, old.endpoint, old.keepalive,
                                       old.allowed_ips) != (l.peer_public_key, l.endpoint,
                                                            l.keepalive, l.allowed_ips)
        if old is not None and old.peer_public_key and old.peer_public_key != l.peer_public_key:
            self._nl(self.wg.set, l.name, peer={"public_key": old.peer_public_key, "remove": True})
        if peer_changed and l.peer_public_key:
            peer = {"public_key": l.peer_public_key, "allowed_ips": list(l.allowed_ips),
                    "replace_allowed_ips": True, "persistent_keepalive": l.keepalive or 0}
            if l.endpoint:
                host, _, port = l.endpoint.rpartition(":")
                peer.update(endpoint_addr=host.strip("[]"), endpoint_port=int(port))
            kw["peer"] = peer
        if kw:
            self._nl(self.wg.set, l.name, **kw)

    def _link_change(self, new: Link, old: Link) -> None:
        if new.mtu != old.mtu:
            self._nl(self.ipr.link, "set", index=self._index(new.name), mtu=new.mtu)
        if new.kind == "wireguard":
            self._wg_configure(new, old)

    def _link_remove(self, l: Link) -> None:
        self._nl(self.ipr.link, "del", index=self._index(l.name))
        del self._ifindex[l.name]

    # -- addresses, routes, rules: rtbatch's requests (one here; many in _batch)
    @property
    def sender(self):
        if self._sender is None:
            from argoctl import rtbatch
            self._sender = rtbatch.Sender()
        return self._sender

    def _request(self, op: Op) -> None:
        from argoctl import rtbatch
        if isinstance(op.obj, Rule) and op.action == "change":   # two requests
            self._request(Op("remove", op.old))
            self._request(Op("add", op.obj))
            return
        self.netlink_writes += 1
        err = self.sender.run([rtbatch.request(op, self._index)])[0]
        if err is not None:
            raise err

    # -- sysctls
    def _sysctl_set(self, s: Sysctl) -> None:
        if s.path in GLOBAL_SYSCTLS:
            saved = self.saved.load()
            if s.path not in saved:
                saved[s.path] = _sysctl_read(s.path)
                if saved[s.path] != s.value:
                    # The kernel copies a global forwarding write onto every
                    # device: keep the devices' own values to put them back.
                    saved[_DEVICES + s.path] = _device_forwarding(s.path)
                    if s.path == IPV6_FORWARDING and s.value == "1":
                        ra = saved[_ACCEPT_RA + s.path] = _accept_ra_1()
                        self.saved.store(saved)       # before the writes: down restores
                        for path in ra:
                            _sysctl_write(path, "2")
                            self.sysctl_writes += 1
                self.saved.store(saved)
        _sysctl_write(s.path, s.value)
        self.sysctl_writes += 1

    def _sysctl_remove(self, s: Sysctl) -> None:
        if s.path not in GLOBAL_SYSCTLS:
            return  # per-device: goes away with the device
        saved = self.saved.load()
        prior = saved.pop(s.path, None)
        devices = saved.pop(_DEVICES + s.path, {})
        ra = saved.pop(_ACCEPT_RA + s.path, {})
        if prior is not None:
            _sysctl_write(s.path, prior)
            self.sysctl_writes += 1
            now = _device_forwarding(s.path)
            for path, value in devices.items():
                if path in now and now[path] != value:
                    _sysctl_write(path, value)
                    self.sysctl_writes += 1
        for path, value in ra.items():             # after forwarding is back
            if _sysctl_read(path) == "2":          # still ours (a device may be gone)
                _sysctl_write(path, value)
                self.sysctl_writes += 1
        self.saved.store(saved)

    # -- dispatch
    def execute(self, op: Op) -> None:
        o = op.obj
        a = op.action
        if isinstance(o, Link):
            {"add": lambda: self._links_add([op], 0, []), "remove": lambda: self._link_remove(o),
             "change": lambda: self._link_change(o, op.old)}[a]()
        elif isinstance(o, (Address, Route, Rule)):
            self._request(op)    # (an address's key is the whole address: no change)
        elif isinstance(o, Sysctl):
            self._sysctl_remove(o) if a == "remove" else self._sysctl_set(o)
        elif isinstance(o, Nft):
            {"add": lambda: self.nft.add(o), "remove": lambda: self.nft.remove(o),
             "change": lambda: self.nft.change(o, op.old)}[a]()
        else:
            raise TypeError(f"unknown object {o!r}")

    def _batch(self, ops: list[Op], first: int, journal: list[Op]) -> None:
        """Address, route and rule ops and link removals in one batch of requests
        (rtbatch): every one that took effect is journaled, then the first failure
        raises."""
        from argoctl import rtbatch
        msgs = []
        for k, op in enumerate(ops, first):
            try:
                msgs.append(rtbatch.request(op, self._index))
            except ApplyError as e:
                ops = ops[:k - first]          # (send those before it: then fail)
                failed = (k, op, str(e))
                break
        else:
            failed = None
        outcomes = self.sender.run(msgs) if msgs else []
        self.netlink_writes += len(msgs)
        for k, (op, err) in enumerate(zip(ops, outcomes), first):
            if err is None:
                if isinstance(op.obj, Link):        # (removed: its index is gone)
                    self._ifindex.pop(op.obj.name, None)
                journal.append(op.inverse())
            elif failed is None:
                failed = (k, op, _reason(err))
        if failed is not None:
            raise ApplyError(f"step {failed[0]} failed: {failed[1]}: {failed[2]}")

    def apply(self, ops: list[Op], fail_at: Optional[int] = None) -> Result:
        """Run ops in order; on any exception undo the completed ones in reverse.
        (`fail_at`: InjectedFailure before op k, for callers without a step hook.)
        Consecutive address, route and rule ops go as one batch of requests, one
        step (see _batch); the others one by one."""
        journal: list[Op] = []
        try:
            k = 0
            while k < len(ops):
                op = ops[k]
                if fail_at == k:
                    raise InjectedFailure(f"injected failure before step {k}: {op}")
                end = k + 1
                while _batchable(op) and end < len(ops) and _batchable(ops[end]) \
                        and end != fail_at:
                    end += 1
                if _creates_link(op):
                    end = k + 1
                    while end < len(ops) and _creates_link(ops[end]) and end != fail_at:
                        end += 1
                    self.step(str(op))
                    self._links_add(ops[k:end], k, journal)
                    k = end
                    continue
                if end > k + 1:
                    self.step(f"{op} (and {end - k - 1} more)")
                    self._batch(ops[k:end], k, journal)
                    k = end
                    continue
                self.step(str(op))
                try:
                    self.execute(op)
                except InjectedFailure:
                    raise
                except Exception as e:
                    raise ApplyError(f"step {k} failed: {op}: {_reason(e)}") from e
                journal.append(op.inverse())
                k += 1
            if fail_at is not None and fail_at >= len(ops):
                raise InjectedFailure(f"injected failure after the last step ({len(ops)})")
        except BaseException as e:
            errors = self.rollback(journal)
            if isinstance(e, ApplyError) or errors:
                raise ApplyError(str(e), errors) from e
            raise
        self.journal = journal   # for a later pipeline stage's failure
        return self.result(ops)

    def rollback(self, journal: list[Op]) -> list[str]:
        errors = []
        for op in reversed(journal):
            try:
                self.execute(op)
            except Exception as e:  # keep undoing the rest; report what could not be undone
                errors.append(f"{op}: {_reason(e)}")
        return errors

    def result(self, ops) -> Result:
        nft_writes = self.nft.writes if self.nft is not None else 0
        return Result(ops=list(ops), writes=self.netlink_writes + nft_writes + self.sysctl_writes,
                      netlink_writes=self.netlink_writes, nft_writes=nft_writes,
                      sysctl_writes=self.sysctl_writes)

    def close(self):
        if self._wg is not None:
            self._wg.close()
        if self._sender is not None:
            self._sender.close()


def link_data(l: Link) -> list:
    """The IFLA_INFO_DATA attributes of a tunnel, in the order pyroute2's link API
    puts them (tests/unit/test_rtbatch.py compares the bytes); WireGuard has none.
    A GRE ttl of None is left out (the kernel's default)."""
    if l.kind not in ("gre", "ip6gre"):
        return []
    p = "IFLA_GRE_" if l.kind == "gre" else "IFLA_IP6GRE_"
    out = [(p + "LOCAL", l.local), (p + "REMOTE", l.remote)]
    if l.ttl is not None:
        out.append((p + "TTL", l.ttl))
    if l.gre_key is not None:
        out += [(p + "IKEY", l.gre_key), (p + "OKEY", l.gre_key),
                (p + "IFLAGS", GRE_KEY_FLAG), (p + "OFLAGS", GRE_KEY_FLAG)]
    return out


def _creates_link(op: Op) -> bool:
    return isinstance(op.obj, Link) and op.action == "add"


def _batchable(op: Op) -> bool:
    """Ops that are one request each (a rule change is two, a link's creation
    several: not here). A link's removal takes its addresses and routes with it,
    and they come before it (plan.diff), so a batch never names a device that an
    earlier request of it deleted."""
    return isinstance(op.obj, (Address, Route)) or (isinstance(op.obj, Rule)
                                                     and op.action != "change") \
        or (isinstance(op.obj, Link) and op.action == "remove")


def remove_interrupted(ipr, intents) -> list[str]:
    """Devices whose creation an `up` began but never finished (killed before the
    alias): in the intent journal, named ag-*, without our alias. Deleted."""
    removed = []
    for name in intents.links():
        found = ipr.link_lookup(ifname=name)
        if found and name.startswith(names.LINK_PREFIX):
            alias = ipr.get_links(found[0])[0].get_attr("IFLA_IFALIAS")
            if not alias:
                ipr.link("del", index=found[0])
                removed.append(name)
        intents.done_link(name)
    return removed


def _reason(e: BaseException) -> str:
    code = getattr(e, "code", None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"{os.strerror(code)} ({errno.errorcode[code]})"
    return str(e) or type(e).__name__
