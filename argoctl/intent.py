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

import os

from argoctl import names, runfiles

INTENT_FILE = names.INTENT_FILE


def _check(doc):
    return runfiles.shape(doc, {"links": (list,), "clsact": (dict,)}, {"lost": (bool,)})


class Intents:
    """A damaged journal must not stop `up` or `down`: what it said is lost, and
    said (`warnings`). It is then marked "lost" until a `down` finishes, which
    then also removes the clsact qdiscs its own filters sat on, if nobody else's
    filters are there (hooks.remove_clsacts)."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, INTENT_FILE)
        self.warnings: list[str] = []
        self.lost = False

    def load(self) -> dict:
        try:
            doc = runfiles.read_json(self.path, _check)
        except FileNotFoundError:
            return {"links": [], "clsact": {}}
        except runfiles.RunFileError as e:
            self._damaged(f"{e}: the devices and clsact qdiscs it recorded are unknown; "
                          "`down` removes the clsact qdiscs left empty by argoctl's filters")
            return {"links": [], "clsact": {}}
        links = [x for x in doc["links"] if isinstance(x, str)]
        clsact = {str(k): v for k, v in doc["clsact"].items()
                  if isinstance(v, int) and not isinstance(v, bool)}
        if len(links) != len(doc["links"]) or len(clsact) != len(doc["clsact"]):
            self._damaged(f"{self.path}: entries of the wrong type ignored")
        self.lost = self.lost or bool(doc.get("lost"))
        return {"links": links, "clsact": clsact}

    def _damaged(self, msg: str) -> None:
        self.lost = True
        if msg not in self.warnings:
            self.warnings.append(msg)

    def _store(self, doc: dict) -> None:
        if not doc["links"] and not doc["clsact"] and not self.lost:
            runfiles.remove(self.path)
            return
        runfiles.write_json(self.path, {**doc, "lost": self.lost})

    def forget_damage(self) -> None:
        """After a whole `down`: nothing of what a damaged journal said is left."""
        if self.lost:
            doc = self.load()       # (what a still damaged file held is unknown: nothing)
            self.lost = False
            self._store(doc)

    def add_link(self, *names: str) -> None:
        """Devices about to be created (several: one write)."""
        doc = self.load()
        new = [n for n in names if n not in doc["links"]]
        if new:
            doc["links"] += new
            self._store(doc)

    def done_link(self, *names: str) -> None:
        doc = self.load()
        if any(n in doc["links"] for n in names):
            doc["links"] = [n for n in doc["links"] if n not in names]
            self._store(doc)

    def links(self) -> list[str]:
        return self.load()["links"]

    def add_clsact(self, ifname: str, ifindex: int, *more: tuple[str, int]) -> None:
        """Qdiscs about to be added: (ifname, ifindex), then more pairs (one write)."""
        doc = self.load()
        for name, index in ((ifname, ifindex), *more):
            doc["clsact"][name] = index
        self._store(doc)

    def drop_clsact(self, *ifnames: str) -> None:
        doc = self.load()
        if [n for n in ifnames if doc["clsact"].pop(n, None) is not None]:
            self._store(doc)

    def clsact(self) -> dict[str, int]:
        return self.load()["clsact"]
