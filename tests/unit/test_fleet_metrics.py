"""Per-destination Prometheus series are bounded with [fleet] (top_n), and the
fleet's own series are always there (0 without [fleet])."""

from prometheus_client.parser import text_string_to_metric_families

from argoctl import config, metrics
from argoctl import daemon as dmn
from argoctl.engine import Engine

HEAD = '''[node]
name = "edge"
address = "192.0.2.1"
tunnel_address = "198.51.100.1"
'''
DEST = '''
[[destination]]
name = "d{i:02d}"
prefixes = ["203.0.113.{i}/32"]
paths = ["direct"]
'''


def daemon(tmp_path, fleet: str):
    f = tmp_path / "edge.toml"
    f.write_text(HEAD + "".join(DEST.format(i=i) for i in range(12)) + fleet)
    cfg = config.load(str(f))
    d = dmn.Daemon(cfg, dmn.Options(metrics_listen=""))
    d.engine = Engine.from_config(cfg)
    d.engine.decide()
    d.written = {n: d.engine.last(n).weights for n in d.engine.destinations()}
    return d


def dests_in(text: str) -> set[str]:
    return {s.labels["dest"] for f in text_string_to_metric_families(text) for s in f.samples
            if "dest" in s.labels}


def value(text: str, name: str) -> float:
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == name)


def test_without_fleet_every_destination_has_its_series(tmp_path):
    text = metrics.Exporter(daemon(tmp_path, "")).text()
    assert len(dests_in(text)) == 12
    assert value(text, "argoctl_fleet_active") == 0
    assert value(text, "argoctl_fleet_destinations_omitted") == 0


def test_with_fleet_only_the_top_n_destinations_have_series(tmp_path):
    d = daemon(tmp_path, '\n[fleet]\nservers = ["nats://127.0.0.1:4222"]\ntop_n = 5\n')
    d._fleet_setup()        # the cell, never started: the bus is not connected
    text = metrics.Exporter(d).text()
    assert len(dests_in(text)) == 5
    assert value(text, "argoctl_fleet_destinations_omitted") == 7
    assert value(text, "argoctl_fleet_active") == 0          # not connected: local
    assert value(text, "argoctl_fleet_probe_streams") == 0   # (these have no probe)
    assert value(text, "argoctl_fleet_paced_streams") == 0   # local: all at the full rate
