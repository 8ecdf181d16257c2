"""Where probes come from: the steered LAN's side of the node.

A probe stands for the traffic the datapath steers, which comes from the LAN
behind the steer interfaces. Sent from the tunnel's own address it would meet
other filters than that traffic does: a relay's reverse-path filter or
firewall that drops the LAN's prefix, a missing route back to the LAN, NAT
rules that match the LAN's source. Sent from the node's own address on the
LAN interface it meets the same ones, so a relay that forwards our probes but
drops the LAN's packets fails its probes too (docs/engine.md, "What a probe
stands for").
"""

from __future__ import annotations

import socket
from typing import Iterable, Optional

from argoctl import netlink

RT_SCOPE_UNIVERSE = 0


def lan_sources(ns: Optional[str], ifnames: Iterable[str]) -> dict[int, str]:
    """{AF_INET: addr, AF_INET6: addr}: per family, the first global address on
    the first steer interface that has one (none: that family's probes keep the
    kernel's choice)."""
    from pyroute2 import IPRoute
    ifnames = list(ifnames)
    if not ifnames:
        return {}
    out: dict[int, str] = {}
    with netlink.netns(ns):
        with IPRoute() as ipr:
            for name in ifnames:
                idx = ipr.link_lookup(ifname=name)
                if not idx:
                    continue
                for msg in ipr.get_addr(index=idx[0]):
                    fam = msg["family"]
                    if fam in out or msg["scope"] != RT_SCOPE_UNIVERSE:
                        continue
                    if fam not in (socket.AF_INET, socket.AF_INET6):
                        continue
                    addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
                    if addr:
                        out[fam] = addr
    return out
