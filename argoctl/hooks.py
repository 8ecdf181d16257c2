"""Where the datapath's programs attach, and how argoctl knows its own there:
tc filters on a clsact qdisc's ingress (named "argoctl-<program>-<prog id>", at
priority TC_PRIO), the clsact qdiscs argoctl added (intent.py), and the cgroup
socket hooks. datapath.py decides what goes where; this module does the writes.

`res` arguments record what a call created (datapath.AttachResult), so that a
failure half-way can be undone exactly; `step(what)` runs before each write."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from typing import Optional

from argoctl import bpfsys

TC_EGRESS = 0xFFFFFFF3    # TC_H_CLSACT:TC_H_MIN_EGRESS
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
        name = _bpf_name(f)
        if name and name.startswith(FILTER_PREFIX) and (f["info"] >> 16) == TC_PRIO:
            out.append(name)
    return out


def _bpf_name(f) -> Optional[str]:
    opts = f.get_attr("TCA_OPTIONS")
    return opts.get_attr("TCA_BPF_NAME") if opts is not None else None


def _no_step(what: str) -> None:
    pass


class ClsactDevices:
    """Indexes of the devices that have a clsact qdisc: one qdisc dump for the
    namespace, at the first question (a no-op `up`, with every filter in place,
    asks none), so that argoctl knows what was there before it journals anything."""

    def __init__(self, ipr, sender=None):
        self.ipr = ipr
        self.sender = sender         # rtbatch.Sender of this namespace: the dump without
        self._have: Optional[set[int]] = None      # IPRoute's machinery (~0.2 s, TCG)

    @property
    def have(self) -> set[int]:
        if self._have is None:
            if self.sender is not None:
                from argoctl import rtbatch
                from pyroute2.netlink.rtnl import RTM_GETQDISC
                from pyroute2.netlink.rtnl.tcmsg import tcmsg
                qdiscs = self.sender.dump(rtbatch.dump(RTM_GETQDISC, tcmsg), tcmsg)
            else:
                qdiscs = self.ipr.get_qdiscs()
            self._have = {q["index"] for q in qdiscs if q.get_attr("TCA_KIND") == "clsact"}
        return self._have


def _ensure_clsact(ipr, ifindex: int, ifname: str, res, step, intents,
                   clsact: ClsactDevices) -> None:
    """A clsact qdisc on the device. Those that have one already (`clsact`) are
    never touched nor recorded. For the others the
    intent goes to the journal first, then the request: an `up` killed between the
    two leaves a record of a qdisc that argoctl was about to create, never of a
    user's (so `down` cannot remove one it did not add)."""
    have = clsact.have
    if ifindex in have:
        return
    recorded = intents is not None and intents.clsact().get(ifname) == ifindex
    if intents is not None and not recorded:
        intents.add_clsact(ifname, ifindex)
    try:
        step(f"clsact {ifname}")       # (a SIGKILL here: the window the journal covers)
        ipr.tc("add", "clsact", ifindex)
    except BaseException as e:
        if intents is not None and not recorded:
            intents.drop_clsact(ifname)   # not made (or one added since the dump: theirs)
        if getattr(e, "code", None) != errno.EEXIST:
            raise
        have.add(ifindex)
        return
    have.add(ifindex)
    if res is not None:      # it did not exist: this call made it (undo takes it back)
        res.clsact_added.append(ifname)


def _tc_attach(ipr, ifindex: int, prog: str, fd: int, ifname: str = "",
               res=None, step=_no_step, intents=None,
               clsact: Optional[ClsactDevices] = None) -> bool:
    """Attach (or atomically replace) our filter; False if already in place.
    `clsact`: shared by the calls of one attach (None: this call's own)."""
    want = _filter_name(prog, bpfsys.prog_info(fd).id)
    if want in _our_filters(ipr, ifindex):
        return False
    _ensure_clsact(ipr, ifindex, ifname, res, step, intents,
                   clsact if clsact is not None else ClsactDevices(ipr))
    step(f"filter {prog} {ifname}")
    # "replace" swaps the program in one step: no packet sees no filter.
    ipr.tc("replace-filter", "bpf", ifindex, TC_HANDLE, fd=fd, name=want,
           parent=TC_INGRESS, prio=TC_PRIO, classid=1, direct_action=True,
           protocol=0x0003)
    return True


def tc_attach_all(ipr, devices: list, res, step=_no_step, intents=None,
                  clsact: Optional[ClsactDevices] = None, sender=None) -> list[str]:
    """_tc_attach for each of `devices` [(ifname, ifindex, prog, fd)], in batches
    (rtbatch; `sender`: of the caller's namespace, None: one device at a time): the
    devices whose filter is missing get their clsact qdisc (the journal takes all
    their names in one write first), then their filters, a batch each, every ack
    read. What took effect is in `res` (clsact_added, newly_attached) before the
    first failure raises, so undo() takes back exactly that. Returns the names
    newly attached."""
    clsact = clsact if clsact is not None else ClsactDevices(ipr)
    if sender is None:
        out = []
        for ifname, ifindex, prog, fd in devices:
            if _tc_attach(ipr, ifindex, prog, fd, ifname, res, step, intents, clsact):
                out.append(ifname)
                res.newly_attached.append(ifname)
        return out
    from argoctl import rtbatch
    from pyroute2.netlink.rtnl.tcmsg import tcmsg
    ids = {fd: bpfsys.prog_info(fd).id for fd in {d[3] for d in devices}}
    # our filter is the one at (TC_PRIO, ETH_P_ALL, TC_HANDLE): a `get` of it per
    # device, all in one send (a dump each, one at a time, was ~0.8 s under TCG
    # at 101 devices); an error (no clsact, no such filter) means not in place
    found = sender.get([rtbatch.filter_get(i, TC_INGRESS, TC_PRIO, TC_HANDLE)
                        for _, i, _, _ in devices], tcmsg)
    need = []
    for (ifname, ifindex, prog, fd), f in zip(devices, found):
        want = _filter_name(prog, ids[fd])
        if isinstance(f, Exception) or _bpf_name(f) != want:
            need.append((ifname, ifindex, prog, fd, want))
    bare = [(n, i) for n, i, *_ in need if i not in clsact.have]
    if bare:
        recorded = intents.clsact() if intents is not None else {}
        fresh = [(n, i) for n, i in bare if recorded.get(n) != i]
        if intents is not None and fresh:
            intents.add_clsact(*fresh[0], *fresh[1:])
        try:
            for n, _ in bare:
                step(f"clsact {n}")     # (a SIGKILL here: the window the journal covers)
            outcomes = sender.run([rtbatch.clsact(i) for _, i in bare])
        except BaseException:
            if intents is not None and fresh:
                intents.drop_clsact(*[n for n, _ in fresh])
            raise
        failed = None
        for (n, i), err in zip(bare, outcomes):
            if err is not None and intents is not None and (n, i) in fresh:
                intents.drop_clsact(n)   # not made (or one added since the dump: theirs)
            if err is None and res is not None:
                res.clsact_added.append(n)  # this call made it (undo takes it back)
            if err is None or err.code == errno.EEXIST:
                clsact.have.add(i)
            elif failed is None:
                failed = err
        if failed is not None:
            raise failed
    for n, _, prog, _, _ in need:
        step(f"filter {prog} {n}")
    # "replace" swaps the program in one step: no packet sees no filter.
    outcomes = sender.run([rtbatch.bpf_filter(i, TC_INGRESS, TC_PRIO, TC_HANDLE, fd, want)
                           for _, i, _, fd, want in need])
    out = [d[0] for d, err in zip(need, outcomes) if err is None]
    res.newly_attached.extend(out)
    for err in outcomes:
        if err is not None:
            raise err
    return out


def _tc_detach(ipr, idx: int) -> None:
    try:
        ipr.tc("del-filter", "bpf", idx, TC_HANDLE, parent=TC_INGRESS,
               prio=TC_PRIO, protocol=0x0003)
    except Exception as e:
        if getattr(e, "code", None) not in (errno.ENOENT, errno.EINVAL):
            raise


def _tc_detach_all(ipr, sender=None) -> list[str]:
    """Remove our filters from every interface of the namespace. `sender` (rtbatch,
    of the caller's namespace): found by filters_in_place, the deletes in one send
    (a request each through IPRoute: ~0.5 s more under TCG at 101 devices)."""
    if sender is not None:
        return _tc_detach_batch(sender)
    removed = []
    for link in ipr.get_links():
        idx = link["index"]
        if _our_filters(ipr, idx):
            _tc_detach(ipr, idx)
            removed.append(link.get_attr("IFLA_IFNAME"))
    return removed


def filters_in_place(sender) -> list[tuple[int, str, str]]:
    """(index, device, filter name) of each device of the caller's namespace (the
    one of `sender`, rtbatch's) where argoctl's filter sits: the one at TC_PRIO,
    ETH_P_ALL, TC_HANDLE, named argoctl-*. A `tc filter get` each, all in one send
    (a link dump and a filter dump a device through IPRoute: ~2 s under TCG at 101
    devices)."""
    import socket
    from argoctl import rtbatch
    from pyroute2.netlink.rtnl.tcmsg import tcmsg
    devices = socket.if_nameindex()         # [(index, name)] of this namespace
    found = sender.get([rtbatch.filter_get(i, TC_INGRESS, TC_PRIO, TC_HANDLE)
                        for i, _ in devices], tcmsg)
    out = []
    for (i, n), f in zip(devices, found):   # (an error: no filter there)
        name = None if isinstance(f, Exception) else _bpf_name(f)
        if name and name.startswith(FILTER_PREFIX):
            out.append((i, n, name))
    return out


def _tc_detach_batch(sender) -> list[str]:
    from argoctl import rtbatch
    ours = filters_in_place(sender)
    _raise_unless_gone(sender.run([rtbatch.filter_del(i, TC_INGRESS, TC_PRIO, TC_HANDLE)
                                   for i, _, _ in ours]))
    return [n for _, n, _ in ours]


def _raise_unless_gone(outcomes: list) -> None:
    """The first error of a batch of deletes, but for what was gone already."""
    for e in outcomes:
        if e is not None and e.code not in (errno.ENOENT, errno.EINVAL):
            raise e


def _foreign_filters(ipr, ifindex: int, sender=None) -> bool:
    """Whether a filter not at argoctl's priority sits on the device's clsact.
    `sender` (rtbatch, of the caller's namespace): its dumps, not IPRoute's."""
    from argoctl import rtbatch
    from pyroute2.netlink.rtnl.tcmsg import tcmsg
    for parent in (TC_INGRESS, TC_EGRESS):
        try:
            flt = (sender.dump(rtbatch.filters(ifindex, parent), tcmsg) if sender is not None
                   else ipr.get_filters(index=ifindex, parent=parent))
        except Exception:
            continue
        if any((f["info"] >> 16) != TC_PRIO for f in flt):
            return True
    return False


def _remove_clsact(ipr, ifname: str, ifindex: int, intents) -> bool:
    """Delete a clsact qdisc argoctl added, unless someone else's filters sit on it
    now (then it is theirs too, and stays). The record goes either way."""
    removed = False
    link = _link(ipr, ifname)
    if link is not None and link["index"] == ifindex and not _foreign_filters(ipr, ifindex):
        try:
            ipr.tc("del", "clsact", ifindex)
            removed = True
        except Exception as e:
            if getattr(e, "code", None) not in (errno.ENOENT, errno.EINVAL):
                raise
    if intents is not None:
        intents.drop_clsact(ifname)
    return removed


def remove_clsacts(ipr, intents, filtered: list[str] = (), sender=None) -> list[str]:
    """Every clsact qdisc the intent journal says argoctl added (see _remove_clsact).
    If the journal was damaged (intents.lost), also those on the devices in
    `filtered` (where argoctl's filters were just removed) that nobody else's
    filters use: what argoctl added there is no longer known. `sender` (rtbatch,
    of the caller's namespace): the deletes in one send, the records dropped in
    one journal write (one each was ~1.5 s under TCG at 101 devices)."""
    recorded = intents.clsact()
    if intents.lost:
        for n in filtered:
            link = _link(ipr, n)
            if link is not None:
                recorded.setdefault(n, link["index"])
    if sender is None:
        return [n for n, idx in sorted(recorded.items())
                if _remove_clsact(ipr, n, idx, intents)]
    import socket
    from argoctl import rtbatch
    now = {n: i for i, n in socket.if_nameindex()}
    # the same device still (not a new one of that name), with no one else's filter
    gone = [(n, idx) for n, idx in sorted(recorded.items())
            if now.get(n) == idx and not _foreign_filters(ipr, idx, sender)]
    outcomes = sender.run([rtbatch.clsact_del(idx) for _, idx in gone])
    intents.drop_clsact(*recorded)
    _raise_unless_gone(outcomes)
    return [n for (n, _), e in zip(gone, outcomes) if e is None]


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

def _cgroup_attach(progs: dict[str, int], cgroup: str, res=None,
                   step=_no_step) -> None:
    cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n, atype in SOCK_PROGRAMS.items():
            pid = bpfsys.prog_info(progs[n]).id
            if pid in bpfsys.prog_query(cg, atype):
                continue
            step(f"cgroup {n}")
            bpfsys.prog_attach(progs[n], cg, atype)
            if res is not None:
                res.cgroup_attached.append(n)
    finally:
        os.close(cg)


def _cgroup_detach(progs: dict[str, int], cgroup: str, only=None) -> None:
    if not os.path.isdir(cgroup):
        return
    cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n, atype in SOCK_PROGRAMS.items():
            if n not in progs or (only is not None and n not in only):
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
