"""What argoctl is about to create, written down before the request that creates it.

Some objects cannot carry argoctl's mark in the request that makes them: the
kernel ignores IFLA_IFALIAS in an RTM_NEWLINK that creates a device (the alias
takes a second request), and a clsact qdisc has no name at all. An `up` killed
between the two requests would leave a device nobody recognises, and `down`
could not tell a clsact qdisc argoctl added from one that was there before.
So the intent goes to `<state dir>/intent.json` first (fsync'd, atomic rename):

- "links": devices being created; one found without our alias is an
  interrupted creation (ours), and reconcile deletes it. Cleared once the
  device carries its alias.
- "clsact": devices whose clsact qdisc argoctl added (name -> ifindex); `down`
  removes those qdiscs (and only those). A qdisc that was already there is
  never recorded.
"""

from __future__ import annotations

import json
import os

INTENT_FILE = "intent.json"


class Intents:
    def __init__(self, directory: str):
        self.path = os.path.join(directory, INTENT_FILE)

    def load(self) -> dict:
        try:
            with open(self.path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            return {"links": [], "clsact": {}}
        except (OSError, ValueError):
            # A corrupt journal must not stop `down`: only lose what it said.
            return {"links": [], "clsact": {}}
        if not isinstance(doc, dict):
            doc = {}
        links = doc.get("links") if isinstance(doc.get("links"), list) else []
        clsact = doc.get("clsact") if isinstance(doc.get("clsact"), dict) else {}
        return {"links": [str(x) for x in links], "clsact": dict(clsact)}

    def _store(self, doc: dict) -> None:
        if not doc["links"] and not doc["clsact"]:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def add_link(self, name: str) -> None:
        doc = self.load()
        if name not in doc["links"]:
            doc["links"].append(name)
            self._store(doc)

    def done_link(self, name: str) -> None:
        doc = self.load()
        if name in doc["links"]:
            doc["links"].remove(name)
            self._store(doc)

    def links(self) -> list[str]:
        return self.load()["links"]

    def add_clsact(self, ifname: str, ifindex: int) -> None:
        doc = self.load()
        doc["clsact"][ifname] = ifindex
        self._store(doc)

    def drop_clsact(self, ifname: str) -> None:
        doc = self.load()
        if doc["clsact"].pop(ifname, None) is not None:
            self._store(doc)

    def clsact(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.load()["clsact"].items()
                if isinstance(v, int)}
