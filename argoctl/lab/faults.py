"""Link faults applied in one instant: netem changes as rtnetlink messages encoded
in advance and sent from the running process over one socket per namespace.

`tc` costs seconds per process start in the TCG VM, so a both-ways blackhole
applied with `tc` (two namespaces, a delete and a replace each) landed its
halves 0.6-2.9 s apart, and no one could say when the fault began. Encoding a
message with pyroute2 costs tens to hundreds of ms there too, so every message
is encoded before the fault; applying it is one send() per link end, back to
back. rtnetlink handles a request inside the sender's sendmsg(), so when the
last send() returns the fault is in full effect: that is its instant (`apply`
returns it); the kernel's acknowledgements are read afterwards. Same qdisc, same
parameters as Link.impair's `tc qdisc replace ... root netem limit 10000 delay D
loss L%`, and the same bookkeeping (LinkEnd.impaired), so Link.clear and
Topology.stop work unchanged.
"""

from __future__ import annotations

import errno
import itertools
import socket
import struct
import time

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_DELQDISC, RTM_NEWQDISC, TC_H_ROOT
from pyroute2.netlink.rtnl.tcmsg import sched_netem, tcmsg

from argoctl.lab.topo import Link, LinkEnd, Topology, TopologyError

NETEM_LIMIT = 10000          # as Link.impair
NETLINK_ROUTE = 0


class FaultError(TopologyError):
    """The kernel refused a fault (netem missing, no such interface)."""


def encode(index: int, seq: int, netem: dict | None) -> bytes:
    """RTM_NEWQDISC replacing the root qdisc of `index` with netem(**netem)
    (delay/jitter in µs, loss in %), or RTM_DELQDISC of the root qdisc (None)."""
    msg = tcmsg()
    msg["family"], msg["index"], msg["handle"], msg["parent"] = 0, index, 0, TC_H_ROOT
    if netem is None:
        msg["header"]["type"] = RTM_DELQDISC
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    else:
        msg["header"]["type"] = RTM_NEWQDISC
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        msg["attrs"] = [["TCA_KIND", "netem"],
                        ["TCA_OPTIONS", sched_netem.get_parameters(
                            {"limit": NETEM_LIMIT, **netem})]]
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


class Faults:
    """Netem on lab links over rtnetlink. open() before the scenario (a socket
    per namespace, its interfaces' indexes), close() after."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self._sock: dict[str, socket.socket] = {}
        self._index: dict[tuple[str, str], int] = {}
        self._seq = itertools.count(1)

    def open(self, links: list[Link]) -> "Faults":
        for link in links:
            for end in (link.a, link.b):
                self._prepare(end)
        return self

    def _prepare(self, end: LinkEnd) -> tuple[socket.socket, int]:
        ns = end.host.netns
        if ns not in self._sock or (ns, end.ifname) not in self._index:
            with end.host.inside():       # the socket belongs to the namespace it was opened in
                if ns not in self._sock:
                    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
                    s.bind((0, 0))
                    s.settimeout(10)
                    self._sock[ns] = s
                self._index[(ns, end.ifname)] = socket.if_nametoindex(end.ifname)
        return self._sock[ns], self._index[(ns, end.ifname)]

    def apply(self, link: Link, direction: str, *, delay_ms: float = 0, jitter_ms: float = 0,
              loss_pct: float = 0) -> tuple[float, float]:
        """Set `direction`'s netem on `link` (all zero: remove it). Returns
        (monotonic time before the first send, after the last send: the instant)."""
        clear = not (delay_ms or loss_pct)
        netem = None if clear else {"delay": int(delay_ms * 1000),
                                    "jitter": int(jitter_ms * 1000), "loss": loss_pct}
        todo = []
        for end in link._ends(direction):
            if clear and "netem" not in end.impaired:
                continue
            sock, index = self._prepare(end)
            seq = next(self._seq)
            todo.append((end, sock, seq, encode(index, seq, netem)))
        t0 = time.monotonic()
        for _, sock, _, data in todo:
            sock.send(data)
        t1 = time.monotonic()
        errors = []
        for end, sock, seq, _ in todo:
            err = self._ack(sock, seq)
            if err:
                errors.append(f"{end.host.name} {end.ifname}: {'del' if clear else 'netem'}: "
                              f"{err}")
            elif clear:
                end.impaired.discard("netem")
            else:
                end.impaired.add("netem")
        if errors:
            raise FaultError("; ".join(errors))
        return t0, t1

    @staticmethod
    def _ack(sock: socket.socket, seq: int) -> str:
        """The kernel's answer to request `seq`: "" (done) or the error."""
        while True:
            data = sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind, _, got = struct.unpack_from("=IHHI", data, off)
                if kind == NLMSG_ERROR and got == seq:
                    code = struct.unpack_from("=i", data, off + 16)[0]
                    return "" if code == 0 else f"{errno.errorcode.get(-code, -code)}"
                off += (length + 3) & ~3 if length else len(data)

    def close(self) -> None:
        for s in self._sock.values():
            s.close()
        self._sock.clear()
