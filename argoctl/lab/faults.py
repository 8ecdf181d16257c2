"""Link faults applied in one instant: netem changes sent as netlink messages from
the running process, over one rtnetlink socket per namespace opened beforehand.

`tc` costs seconds per process start in the TCG VM, so a both-ways blackhole
applied with `tc` (two namespaces, a delete and a replace each) landed its
halves 0.6-2.9 s apart, and no one could say when the fault began. Here a
scenario step is at most one RTM_NEWQDISC/RTM_DELQDISC per link end, sent back
to back (milliseconds); `apply` returns when the kernel has acknowledged the
last one: from then on the fault is in full effect (its instant). Same qdisc,
same parameters as Link.impair's `tc qdisc replace ... root netem limit 10000
delay D loss L%`, and the same bookkeeping (LinkEnd.impaired), so Link.clear
and Topology.stop work unchanged.
"""

from __future__ import annotations

import time

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import TC_H_ROOT

from argoctl.lab.topo import Link, LinkEnd, Topology

NETEM_LIMIT = 10000          # as Link.impair


class Faults:
    """Netem on lab links over netlink. open() before the scenario (a socket per
    namespace, its interfaces' indexes), close() after."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self._ipr: dict[str, IPRoute] = {}
        self._index: dict[tuple[str, str], int] = {}

    def open(self, links: list[Link]) -> "Faults":
        for link in links:
            for end in (link.a, link.b):
                self._index_of(end)
        return self

    def _sock(self, end: LinkEnd) -> IPRoute:
        ipr = self._ipr.get(end.host.netns)
        if ipr is None:
            with end.host.inside():       # the socket belongs to the namespace it was opened in
                ipr = IPRoute()
            self._ipr[end.host.netns] = ipr
        return ipr

    def _index_of(self, end: LinkEnd) -> int:
        key = (end.host.netns, end.ifname)
        if key not in self._index:
            found = self._sock(end).link_lookup(ifname=end.ifname)
            if not found:
                raise RuntimeError(f"{end.host.name}: no interface {end.ifname}")
            self._index[key] = found[0]
        return self._index[key]

    def apply(self, link: Link, direction: str, *, delay_ms: float = 0, jitter_ms: float = 0,
              loss_pct: float = 0) -> tuple[float, float]:
        """Set `direction`'s netem on `link` (all zero: remove it). Returns
        (monotonic time before the first message, after the last ack)."""
        ends = link._ends(direction)
        # everything that can be looked up is looked up before the first message
        todo = [(end, self._sock(end), self._index_of(end)) for end in ends]
        clear = not (delay_ms or loss_pct)
        t0 = time.monotonic()
        for end, ipr, idx in todo:
            if clear:
                if "netem" in end.impaired:
                    ipr.tc("del", index=idx, parent=TC_H_ROOT)
                    end.impaired.discard("netem")
                continue
            ipr.tc("replace", "netem", idx, limit=NETEM_LIMIT, delay=int(delay_ms * 1000),
                   jitter=int(jitter_ms * 1000), loss=loss_pct)
            end.impaired.add("netem")
        return t0, time.monotonic()

    def close(self) -> None:
        for ipr in self._ipr.values():
            try:
                ipr.close()
            except OSError:
                pass
        self._ipr.clear()
