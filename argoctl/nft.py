"""The `inet argoctl` nftables table, through nftables' own Python binding (JSON API).

On a relay, a connection arriving through tunnel ag-X is conntrack-marked with
X's path mark and masqueraded when it leaves through a non-tunnel interface;
replies get the conntrack mark copied into the packet mark in prerouting, so the
fwmark rule sends them back into ag-X (symmetric return). SYNs through ag-* get
their MSS clamped to the route MTU.

Every rule carries the digest of the whole definition in its comment: reading the
table back yields (digest, rules per chain), which is what reconcile compares.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from argoctl import names
from argoctl.config import Config

FAMILY, TABLE = names.NFT_FAMILY, names.NFT_TABLE
TUNNELS = names.LINK_PREFIX + "*"      # nft wildcard on interface names
U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Nft:
    """The `inet argoctl` table. Compared by the digest of its definition (kept in the
    table's comment) and by its chains' rule counts, which catches rules deleted by hand."""
    digest: str
    chains: tuple[tuple[str, int], ...]
    commands: tuple = field(default=(), compare=False, repr=False)  # nft JSON to create it
    raw: tuple = field(default=(), compare=False, repr=False)       # as read back (for rollback)

    @property
    def key(self):
        return names.NFT_TABLE


class NftError(Exception):
    pass


def _meta(key):
    return {"meta": {"key": key}}


def _ct(key):
    return {"ct": {"key": key}}


def _match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def _set_field(target, mark, mask):
    """target = (target & ~mask) | mark: only our bits of the mark field change."""
    return {"mangle": {"key": target, "value": {"|": [{"&": [target, U32 & ~mask]}, mark]}}}


def _chains(config: Config) -> dict[str, tuple[dict, list[list]]]:
    r = config.routing
    mask = r.fwmark_mask
    prerouting = []
    for peer in config.peers:
        mark = r.mark(peer.id)
        dev = names.link_name(peer.name)
        # A new connection arriving through ag-X remembers X in its conntrack mark ...
        prerouting.append([_match(_meta("iifname"), dev), _match(_ct("state"), ["new"], "in"),
                           _set_field(_ct("mark"), mark, mask)])
        # ... and its replies carry X's mark, so the fwmark rule routes them back into ag-X.
        prerouting.append([_match(_ct("direction"), "reply"),
                           _match({"&": [_ct("mark"), mask]}, mark),
                           _set_field(_meta("mark"), mark, mask)])
    syn = _match({"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "rst"]]}, "syn")
    clamp = {"mangle": {"key": {"tcp option": {"name": "maxseg", "field": "size"}},
                        "value": {"rt": {"key": "mtu"}}}}
    forward = [[_match(_meta("oifname"), TUNNELS), syn, clamp],
               [_match(_meta("iifname"), TUNNELS), syn, clamp]]
    # Masquerade only connections that arrived through a tunnel (our ct mark): the outer
    # packets of our own tunnels also show the tunnel as input device in postrouting
    # (ip_output passes skb->dev), and must keep the tunnel's local address.
    postrouting = [[_match(_meta("iifname"), TUNNELS), _match(_meta("oifname"), TUNNELS, "!="),
                    _match({"&": [_ct("mark"), mask]}, 0, "!="), {"masquerade": None}]]
    return {
        "prerouting": ({"type": "filter", "hook": "prerouting", "prio": -150}, prerouting),
        "forward": ({"type": "filter", "hook": "forward", "prio": -150}, forward),
        "postrouting": ({"type": "nat", "hook": "postrouting", "prio": 100}, postrouting),
    }


def ruleset(config: Config) -> Nft:
    """The desired table for `config`, with the nft JSON commands that create it."""
    chains = _chains(config)
    digest = hashlib.sha256(json.dumps(chains, sort_keys=True).encode()).hexdigest()[:16]
    cmds = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    for name, (hook, rules) in chains.items():
        cmds.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name,
                                       "policy": "accept", **hook}}})
        for expr in rules:
            cmds.append({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": name,
                                          "comment": f"argoctl {digest}", "expr": expr}}})
    counts = tuple((name, len(rules)) for name, (_, rules) in chains.items())
    return Nft(digest=digest, chains=counts, commands=tuple(cmds))


# ---------------------------------------------------------------------------- kernel side

class Client:
    """One libnftables context. Create it inside the target network namespace."""

    def __init__(self):
        import nftables  # Debian's python3-nftables, made importable into the venv
        self.nft = nftables.Nftables()
        self.nft.set_json_output(True)
        self.nft.set_handle_output(True)
        self.writes = 0

    def _run(self, cmds) -> dict:
        rc, out, err = self.nft.json_cmd({"nftables": list(cmds)})
        if rc != 0:
            raise NftError(f"nft: {err.strip() or out}")
        return out

    def read(self):
        """Our table as an Nft, or None if it does not exist."""
        rc, out, err = self.nft.json_cmd(
            {"nftables": [{"list": {"table": {"family": FAMILY, "name": TABLE}}}]})
        if rc != 0:
            return None  # ENOENT: no table of ours
        items = [o for o in out["nftables"] if "metainfo" not in o]
        counts, digests = {}, set()
        for o in items:
            if "chain" in o:
                counts.setdefault(o["chain"]["name"], 0)
            elif "rule" in o:
                counts[o["rule"]["chain"]] = counts.get(o["rule"]["chain"], 0) + 1
                digests.add(o["rule"].get("comment", ""))
        digest = digests.pop().split(" ")[-1] if len(digests) == 1 else ",".join(sorted(digests))
        return Nft(digest=digest, chains=tuple(counts.items()), raw=tuple(items))

    @staticmethod
    def _recreate(raw) -> list:
        """Commands that rebuild a table from its listing (handles dropped)."""
        cmds = []
        for o in raw:
            (kind, body), = o.items()
            body = {k: v for k, v in body.items() if k != "handle"}
            if kind == "rule":
                body["expr"] = [_strip_counters(e) for e in body["expr"]]
            cmds.append({"add": {kind: body}})
        return cmds

    def _commands(self, nft: Nft) -> list:
        return list(nft.commands) if nft.commands else self._recreate(nft.raw)

    def add(self, nft: Nft) -> None:
        self._run(self._commands(nft))
        self.writes += 1

    def change(self, new: Nft, old: Nft) -> None:
        # One transaction: the table is never seen half-built.
        self._run([{"delete": {"table": {"family": FAMILY, "name": TABLE}}}] + self._commands(new))
        self.writes += 1

    def remove(self, nft: Nft = None) -> None:
        self._run([{"delete": {"table": {"family": FAMILY, "name": TABLE}}}])
        self.writes += 1

    def ruleset_text(self) -> str:
        """`nft list ruleset` (for snapshots in tests and status)."""
        self.nft.set_json_output(False)
        try:
            rc, out, err = self.nft.cmd("list ruleset")
        finally:
            self.nft.set_json_output(True)
        return out


def _strip_counters(expr):
    if isinstance(expr, dict) and "counter" in expr:
        return {"counter": None}
    return expr
