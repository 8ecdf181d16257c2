"""The key files a config names (node.private_key_file, policy.responder_key_file):
checked as their readers will read them when they exist; one that does not exist
yet is noted (`up` or `run` creates it, mode 0600) when its directory exists.
A mixin of the loader's checker (checks._Checker): it reports through err()."""

from __future__ import annotations

import os
from typing import Optional

from argoctl import keys, mac
from argoctl.config.model import Node, Peer
from argoctl.config.rules import Path, _label


class KeyFileChecks:
    notes: list[str]

    def key_path(self, path: Path, file: str, what: str, creates: str) -> bool:
        """A key file the config names: True when it exists (then check its mode,
        owner and content as its reader will). One that does not exist yet is
        fine when `creates` (up or run) will make it: it is noted, and only its
        directory must exist."""
        if "\0" in file:
            self.err(path, f"{_label(path)}: the path contains a NUL byte",
                     "a file name cannot hold NUL")
            return False
        if os.path.lexists(file):
            return True
        directory = os.path.dirname(file) or "."
        if not os.path.isdir(directory):
            self.err(path, f"{_label(path)}: {what} {file} does not exist and neither does "
                     f"its directory {directory}", f"create the directory; `{creates}` then "
                     "creates the file (mode 0600)")
        else:
            self.notes.append(keys.redact(f"{what} {file} does not exist yet: `{creates}` "
                                          "creates it (mode 0600)"))
        return False

    def secret_file(self, path: Path, file: str) -> None:
        """The responder/probe key: mode, owner and content as the prober will read it."""
        if not self.key_path(path, file, "probe key file", "argoctl run"):
            return
        try:
            mac.read_key(file)
        except keys.KeyFileError as e:
            self.err(path, e.message, e.hint)

    def key_file(self, node: Optional[Node], peers: list[tuple[Path, Peer]]) -> None:
        if node is None:
            return
        wg = [x.name for _, x in peers if x.tunnel == "wireguard"]
        kp = ("node", "private_key_file")
        if node.private_key_file is None:
            if wg:
                self.err(("node",), f"missing required key 'node.private_key_file': peer "
                         f"{wg[0]!r} uses WireGuard",
                         f"argoctl keygen --private-key {node.name or 'node'}.key, then add "
                         f"private_key_file = \"{node.name or 'node'}.key\"")
            return
        if not self.key_path(kp, node.private_key_file, "private key file",
                             "argoctl up` or `argoctl run"):
            return
        try:
            private = keys.read_private_key(node.private_key_file)
        except keys.KeyFileError as e:
            self.err(kp, e.message, e.hint)
            return
        own = keys.public_key(private)
        for p, x in peers:
            if x.public_key is None:
                continue
            given = keys.decode(x.public_key)
            if given == private:
                self.err(p + ("public_key",), "peer.public_key is this node's PRIVATE key",
                         "remove it from this file now; use the public key printed by "
                         "`argoctl keygen` on the peer")
            elif given == own:
                self.err(p + ("public_key",), "peer.public_key is this node's own public key",
                         "use the public key printed by `argoctl keygen` on the peer")
