"""The Prometheus exporter of `argoctl run`, per the contract in metrics_names.py.

A custom collector reads the daemon at scrape time (the engine's latest
decisions, the daemon's counters, the datapath's per-CPU counters through the
pinned maps), so the loop does no metric bookkeeping of its own and a scrape
never sees half a round. Each exporter has its own registry: several daemons
(lab nodes) can live in one process.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from argoctl import maps
from argoctl.metrics_names import BY_NAME, METRICS, PATH_STATES

STATE_VALUE = {name: value for value, name in PATH_STATES.items()}
STATE_VALUE["unknown"] = STATE_VALUE["down"]     # never answered: not reachable (yet)
# Probe replies the prober rejected, by its reason -> the contract's result label.
REJECT_RESULT = {"forged": "forged", "wrong_key": "forged", "bad_mac": "forged",
                 "replayed": "replayed", "unmatched": "replayed", "malformed": "malformed"}


def _family(name: str):
    m = BY_NAME[name]
    cls = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily,
           "summary": SummaryMetricFamily}[m.kind]
    # prometheus_client appends _total to counters itself.
    base = name[:-len("_total")] if m.kind == "counter" else name
    return cls(base, m.help, labels=list(m.labels))


def parse_listen(text: str) -> tuple[str, int]:
    """"127.0.0.1:9474" / "[::1]:9474" -> (host, port) (the loader validated it)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class Collector:
    def __init__(self, daemon):
        self.d = daemon

    def describe(self):
        return []   # no describe-time collection (the daemon may not be running yet)

    def collect(self) -> Iterable:
        d = self.d
        fam = {m.name: _family(m.name) for m in METRICS}
        for dest in d.engine.destinations():
            dec = d.engine.last(dest)
            written = d.written.get(dest, {})
            for path in d.engine.paths(dest):
                labels = [dest, path]
                if dec is not None:
                    s = dec.scores[path]
                    snap = s.snapshot
                    if snap.srtt_ms is not None:
                        fam["argoctl_path_rtt_seconds"].add_metric(labels, snap.srtt_ms / 1000)
                        fam["argoctl_path_jitter_seconds"].add_metric(labels, snap.jitter_ms / 1000)
                    fam["argoctl_path_loss_ratio"].add_metric(labels, snap.loss)
                    fam["argoctl_path_state"].add_metric(labels, STATE_VALUE[s.state.value])
                w = written.get(path, (0, True))[0]
                fam["argoctl_path_chosen"].add_metric(labels, 1 if w > 0 else 0)
                # a shared stream's results are counted under its first destination;
                # every destination sharing it reports them (they are its measurement)
                counts = d.probe_results(d.engine.sharers(dest, path)[0], path)
                for result in ("ok", "timeout"):
                    fam["argoctl_probe_results_total"].add_metric([dest, path, result],
                                                                  counts[result])
            fam["argoctl_path_switches_total"].add_metric([dest], d.switches[dest])
        if d.sched is not None:
            # Rejected replies are counted per socket (path), not per destination.
            for path, counts in d.sched.rejects().items():
                out = {}
                for reason, n in counts.items():
                    r = REJECT_RESULT.get(reason)
                    if r:
                        out[r] = out.get(r, 0) + n
                for r in ("forged", "replayed", "malformed"):
                    fam["argoctl_probe_results_total"].add_metric(["", path, r], out.get(r, 0))
        m = d.maps
        if m is not None:
            self._datapath(fam, m)
        return list(fam.values())

    def _datapath(self, fam, m: maps.Maps) -> None:
        cfg = self.d.cfg
        paths = {p for dest in cfg.destinations for p in dest.paths}
        for path in sorted(paths):
            st = m.path_stats(cfg.path_id(path))
            fam["argoctl_datapath_packets_total"].add_metric([path], st.packets)
            fam["argoctl_datapath_bytes_total"].add_metric([path], st.bytes)
            fam["argoctl_passive_syn_total"].add_metric([path], st.syns)
            fam["argoctl_passive_synack_total"].add_metric([path], st.synacks)
            fam["argoctl_passive_handshake_rtt_seconds"].add_metric(
                [path], count_value=st.rtt_count, sum_value=st.rtt_sum_ns / 1e9)
        for dest in cfg.destinations:
            fam["argoctl_destination_packets_total"].add_metric(
                [dest.name], m.dest_stats(dest.id).packets)


class Exporter:
    """The daemon's metrics on a registry of their own, optionally over HTTP."""

    def __init__(self, daemon):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(daemon))
        self.server = None
        self.thread = None

    def text(self) -> str:
        from prometheus_client import generate_latest
        return generate_latest(self.registry).decode()

    def serve(self, listen: str) -> tuple[str, int]:
        """Listen on host:port (in the calling thread's network namespace)."""
        from prometheus_client import start_http_server
        host, port = parse_listen(listen)
        self.server, self.thread = start_http_server(port, addr=host, registry=self.registry)
        return host, self.server.server_port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
