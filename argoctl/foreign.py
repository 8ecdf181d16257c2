"""Other software's policy rules, as argoctl meets them on a host.

Tailscale, Cilium, Calico, kube-proxy and others route by fwmark too
(docs/design.md lists the bits each uses). argoctl matches its marks with one
mask: a foreign rule whose mask overlaps it and whose mark sets bits inside
it (or that matches the inverse of a mark there) would take argoctl's packets,
or hand its own packets to argoctl's tables. `up` refuses to start next to one
and names it; `status` shows foreign rules inside argoctl's priority range.
"""

from __future__ import annotations

from argoctl import names
from argoctl.config import Routing

FIB_RULE_INVERT = 0x2
FAMILIES = {4: 2, 6: 10}          # AF_INET, AF_INET6


def rule_text(family: int, msg) -> str:
    """The rule as `ip rule` prints it (enough to find and remove it)."""
    parts = [f"ip -{family} rule: priority {msg.get_attr('FRA_PRIORITY') or 0}"]
    if msg["flags"] & FIB_RULE_INVERT:
        parts.append("not")
    if msg["src_len"]:
        parts.append(f"from {msg.get_attr('FRA_SRC')}/{msg['src_len']}")
    if msg["dst_len"]:
        parts.append(f"to {msg.get_attr('FRA_DST')}/{msg['dst_len']}")
    for attr, word in (("FRA_IIFNAME", "iif"), ("FRA_OIFNAME", "oif")):
        if msg.get_attr(attr):
            parts.append(f"{word} {msg.get_attr(attr)}")
    mark, mask = _mark(msg)
    if mark is not None:
        parts.append(f"fwmark {mark:#x}/{mask:#x}")
    table = msg.get_attr("FRA_TABLE") or msg["table"]
    parts.append(f"lookup {table}" if msg["action"] == 1 else f"action {msg['action']}")
    return " ".join(parts)


def _mark(msg):
    """(mark, mask) of a rule's fwmark selector, or (None, None) without one."""
    mark, mask = msg.get_attr("FRA_FWMARK"), msg.get_attr("FRA_FWMASK")
    if mark is None and mask is None:
        return None, None
    return mark or 0, 0xFFFFFFFF if mask is None else mask


def _rules(ipr, owned: set, snap=None):
    """`snap` (netlink.Snapshot): the rules the caller dumped already."""
    for family, af in FAMILIES.items():
        for msg in (snap.rules(af) if snap is not None else ipr.get_rules(family=af)):
            prio = msg.get_attr("FRA_PRIORITY") or 0
            key = (family, prio, msg.get_attr("FRA_FWMARK") or 0, msg.get_attr("FRA_FWMASK"))
            if key not in owned:
                yield family, prio, msg


def _owned(state) -> set:
    return {(r.family, r.priority, r.mark, r.mask) for r in state.rules}


def mark_conflicts(ipr, routing: Routing, state, snap=None) -> list[str]:
    """Foreign rules (not in `state`, what argoctl owns) that match on bits of
    argoctl's fwmark mask with a mark that sets bits there (or inverted)."""
    out = []
    for family, _, msg in _rules(ipr, _owned(state), snap):
        mark, mask = _mark(msg)
        if mark is None or not mask & routing.fwmark_mask:
            continue
        if mark & routing.fwmark_mask or msg["flags"] & FIB_RULE_INVERT:
            out.append(rule_text(family, msg))
    return out


def in_our_range(ipr, routing: Routing, state) -> list[str]:
    """Foreign rules at priorities argoctl uses (rule_priority_base .. +254)."""
    lo = routing.rule_priority_base
    return [rule_text(family, msg) for family, prio, msg in _rules(ipr, _owned(state))
            if lo <= prio <= lo + names.MAX_PATH_ID]


def conflict_message(routing: Routing, conflicts: list[str]) -> str:
    return (f"{conflicts[0]} is not argoctl's and matches on fwmark bits of argoctl's mask "
            f"{routing.fwmark_mask:#010x}" +
            (f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else "") +
            "; set [routing] fwmark_mask to bits no other software on this host uses "
            "(docs/design.md lists Tailscale's, Cilium's, Calico's, kube-proxy's)")
