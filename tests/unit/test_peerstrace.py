"""bench peers reads argoctl's decisions from its edge daemon's log, as the
daemon writes them (daemon.Record through service.LineFormatter): the reader
and the writer must not drift apart."""

import json
import logging

from argoctl import service
from argoctl.bench.peerstrace import logged_decisions
from argoctl.daemon import Record


def test_the_bench_reads_each_decision_the_daemon_logs(tmp_path):
    path = tmp_path / "edge.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(service.LineFormatter())
    log = logging.getLogger("test-peerstrace")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info(json.dumps({"event": "start", "datapath": "adopted"}))
        for at, dest, choice, prev in ((12.5, "origin", "relay1", "direct"),
                                       (13.0, "other", "relay2", "direct"),
                                       (20.25, "origin", "direct", "relay1")):
            rec = Record(at, dest, choice, prev, {"direct": (0, False), "relay1": (100, True)},
                         f"{prev} -> {choice}", {"direct": "down"})
            log.info(json.dumps(rec.to_dict(), sort_keys=False))
    finally:
        log.removeHandler(handler)
        handler.close()
    with open(path, "a") as f:
        f.write('2026-12-04T00:00:00.000Z info {"event": "decision", "at": 3')  # cut short
    got = logged_decisions(str(path), "origin")
    assert [(r["at"], r["choice"], r["previous"], r["reason"]) for r in got] == [
        (12.5, "relay1", "direct", "direct -> relay1"), (20.25, "direct", "relay1", "relay1 -> direct")]
    assert got[0]["weights"] == {"direct": [0, "down"], "relay1": [100, "up"]}
    assert logged_decisions(str(tmp_path / "none.log"), "origin") == []
