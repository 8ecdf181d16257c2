"""Run files (argoctl/runfiles.py): the one atomic writer, and every reader over
every damaged form of its file: empty, truncated, garbled bytes, not an object,
a field missing, a field of the wrong type. Each names the file; each caller's
way on (tests/netns/test_runfiles.py runs the commands over them)."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from argoctl import explain, home, names, runfiles
from argoctl import daemon as dmn
from argoctl.config import Routing
from argoctl.intent import Intents

STATE_DOC = {
    "version": dmn.STATE_VERSION, "pid": 4242, "running": False, "updated": 1.7e9,
    "started": 1.7e9, "node": "edge", "config": "/etc/argoctl/argoctl.toml",
    "probe_interval_ms": 100,
    "destinations": {"origin": {
        "choice": "direct", "reason": "only path up", "since": 1.7e9, "decided_at": 1.7e9,
        "id": 1, "prefixes": ["203.0.113.0/24"], "switches": 0, "written": {"direct": [100, True]},
        "paths": {"direct": {
            "state": "up", "tier": "usable", "weight": 100, "up": True, "score_ms": 1.5,
            "raw_ms": 1.4, "rtt_ms": 1.4, "jitter_ms": 0.1, "loss": 0.0, "penalty": 0.0,
            "suppressed": False, "held_for_s": None, "replies": 9, "timeouts": 0}}}}}


def _direct(d):
    return d["destinations"]["origin"]["paths"]["direct"]


def _forms(valid: dict, missing, wrong) -> dict:
    text = json.dumps(valid).encode()
    garbled = bytearray(text)
    garbled[::5] = b"\xff" * len(garbled[::5])

    def edit(change):
        doc = json.loads(text)
        change(doc)
        return json.dumps(doc).encode()
    return {"empty": b"", "truncated": text[:len(text) // 2], "garbled": bytes(garbled),
            "not-an-object": b"[1, 2]", "missing-field": edit(missing),
            "wrong-type": edit(wrong)}


STATE_FORMS = _forms(STATE_DOC, lambda d: _direct(d).pop("state"),
                     lambda d: _direct(d).update(loss="none"))
STATE_FORMS.update({
    "no-destinations": json.dumps({**STATE_DOC, "destinations": None}).encode(),
    "dest-missing-choice": json.dumps({**STATE_DOC, "destinations": {"origin": {
        "reason": "x", "paths": {}}}}).encode(),
    "bool-as-number": json.dumps({**STATE_DOC, "updated": True}).encode(),
    "other-version": json.dumps({**STATE_DOC, "version": 99}).encode()})
ROUTING_DOC = {"table_base": 7200, "rule_priority_base": 7200, "fwmark_mask": 0xff}
ROUTING_FORMS = _forms(ROUTING_DOC, lambda d: d.pop("fwmark_mask"),
                       lambda d: d.update(table_base="7200"))
ROUTING_FORMS["holey-mask"] = json.dumps({**ROUTING_DOC, "fwmark_mask": 0x101}).encode()
SAVED_DOC = {"net/ipv4/ip_forward": "0", "devices:net/ipv4/ip_forward": {"x": "0"},
             "accept_ra:net/ipv6/conf/all/forwarding": {"net/ipv6/conf/eth0/accept_ra": "1"}}
SAVED_FORMS = _forms(SAVED_DOC, lambda d: d.update({"devices:net/ipv4/ip_forward": None}),
                     lambda d: d.update({"net/ipv4/ip_forward": 0}))
INTENT_DOC = {"links": ["ag-relay1"], "clsact": {"to-client": 3}}
INTENT_FORMS = _forms(INTENT_DOC, lambda d: d.pop("clsact"),
                      lambda d: d.update(clsact=["to-client"]))


def _put(tmp_path, name: str, raw: bytes) -> str:
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(raw)
    return path


def test_the_valid_documents_read_back(tmp_path):
    runfiles.write_json(str(tmp_path / names.STATE_FILE), STATE_DOC)
    assert explain.load(str(tmp_path))["destinations"] == STATE_DOC["destinations"]
    runfiles.write_json(str(tmp_path / names.ROUTING_FILE), ROUTING_DOC)
    assert runfiles.load_routing(str(tmp_path)) == Routing(**ROUTING_DOC)
    s = runfiles.Saved(str(tmp_path))
    s.store(SAVED_DOC)
    assert s.load() == SAVED_DOC and s.warnings == []
    runfiles.write_json(str(tmp_path / names.INTENT_FILE), INTENT_DOC)
    i = Intents(str(tmp_path))
    assert i.links() == ["ag-relay1"] and i.clsact() == {"to-client": 3} and not i.lost


@pytest.mark.parametrize("form", sorted(STATE_FORMS))
def test_a_damaged_state_file_is_named_by_every_reader(tmp_path, form):
    path = _put(tmp_path, names.STATE_FILE, STATE_FORMS[form])
    with pytest.raises(runfiles.RunFileError) as e:
        explain.load(str(tmp_path))          # explain, fleet status
    assert str(e.value).startswith(f"{path}: ") and e.value.path == path
    with pytest.raises(ValueError, match=f"^{path}: "):
        explain.live_choices(str(tmp_path))  # status: said, never silently left out


@pytest.mark.parametrize("form", sorted(ROUTING_FORMS))
def test_damaged_ranges_are_named_and_down_falls_back_to_the_defaults(tmp_path, form):
    path = _put(tmp_path, names.ROUTING_FILE, ROUTING_FORMS[form])
    with pytest.raises(runfiles.RunFileError, match=f"^{path}: "):
        runfiles.load_routing(str(tmp_path))
    warnings: list[str] = []
    assert runfiles.load_routing_or_default(str(tmp_path), warnings) == Routing()
    assert len(warnings) == 1 and warnings[0].startswith(f"{path}: ") and "-c FILE" in warnings[0]


@pytest.mark.parametrize("form", sorted(SAVED_FORMS))
def test_damaged_saved_values_warn_and_start_fresh(tmp_path, form):
    path = _put(tmp_path, names.SAVED_SYSCTLS_FILE, SAVED_FORMS[form])
    s = runfiles.Saved(str(tmp_path))
    assert s.load() == {} and s.load() == {}
    assert len(s.warnings) == 1 and s.warnings[0].startswith(f"{path}: ")
    s.store({"net/ipv4/ip_forward": "1"})   # replaced whole by the next store
    assert runfiles.Saved(str(tmp_path)).load() == {"net/ipv4/ip_forward": "1"}


@pytest.mark.parametrize("form", sorted(INTENT_FORMS))
def test_a_damaged_intent_journal_is_said_and_stays_marked_until_down(tmp_path, form):
    path = _put(tmp_path, names.INTENT_FILE, INTENT_FORMS[form])
    i = Intents(str(tmp_path))
    assert i.links() == [] and i.clsact() == {} and i.lost
    assert len(i.warnings) == 1 and i.warnings[0].startswith(f"{path}: ")
    i.add_clsact("to-client", 3)             # an up over it: the mark stays
    j = Intents(str(tmp_path))
    assert j.clsact() == {"to-client": 3} and j.lost and j.warnings == []
    j.drop_clsact("to-client")
    j.forget_damage()                        # the end of a whole `down`
    assert not os.path.exists(path)


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = str(tmp_path / names.STATE_FILE)
    runfiles.write_json(path, {"a": 1})

    def fail(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="No space"):
        runfiles.write_json(path, {"b": 2})
    assert runfiles.read_json(path) == {"a": 1} and os.listdir(tmp_path) == [names.STATE_FILE]


def test_the_lock_is_written_whole_and_still_excludes(tmp_path):
    path = _put(tmp_path, names.LOCK_FILE, b"\xff\x00 garbage")   # a damaged lock file
    stale = os.open(path, os.O_RDWR)        # opened before the holder replaced the file
    a = home.InstanceLock(str(tmp_path), "up")
    a.acquire()
    assert open(path).read() == f"{os.getpid()} up\n"
    assert os.stat(path).st_ino != os.fstat(stale).st_ino
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)   # the old file is nobody's lock now,
    os.close(stale)
    b = home.InstanceLock(str(tmp_path))
    with pytest.raises(home.Refused, match=f"another argoctl up \\(pid {os.getpid()}\\)"):
        b.acquire()                          # the file at the path is
    assert b.holder() == "up"
    with open(path, "w") as f:               # damaged in place while held
        f.write("pid ?")
    with pytest.raises(home.Refused, match=f"another argoctl process \\(pid \\?\\) holds {path}"):
        b.acquire()
    assert b.holder() == "run"               # (unknown: the cautious answer)
    a.release()
    b.acquire()
    assert open(path).read() == f"{os.getpid()} run\n" and os.listdir(tmp_path) == [
        names.LOCK_FILE]
    b.release()
    assert b.holder() is None
