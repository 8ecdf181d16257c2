"""The Prometheus exporter of `argoctl run`, per the contract in metrics_names.py.

A collector reads the daemon at scrape time (the engine's latest decisions,
the daemon's counters, the datapath's per-CPU counters through the pinned
maps), so the loop does no metric bookkeeping of its own and a scrape never
sees half a round. Each exporter has its own server: several daemons (lab
nodes) can live in one process.

The text is formatted here rather than by prometheus_client's generate_latest:
1,000 destinations x 4 paths make ~30,000 samples, which cost ~180 ms of
CPU per scrape through prometheus_client's per-sample objects and escaping,
and ~80 ms here. The output is byte-identical to generate_latest over the same
metric families (Collector.collect, which tests/unit/test_daemon_wiring.py
formats both ways).
"""

from __future__ import annotations

import gzip
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.utils import floatToGoString

from argoctl import maps
from argoctl.metrics_names import BY_NAME, METRICS, PATH_STATES

STATE_VALUE = {name: value for value, name in PATH_STATES.items()}
STATE_VALUE["unknown"] = STATE_VALUE["down"]     # never answered: not reachable (yet)
# Probe replies the prober rejected, by its reason -> the contract's result label.
REJECT_RESULT = {"forged": "forged", "wrong_key": "forged", "bad_mac": "forged",
                 "replayed": "replayed", "unmatched": "replayed", "malformed": "malformed"}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_listen(text: str) -> tuple[str, int]:
    """"127.0.0.1:9474" / "[::1]:9474" -> (host, port) (the loader validated it)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class Collector:
    def __init__(self, daemon):
        self.d = daemon

    def samples(self) -> dict[str, list[tuple[tuple[str, ...], object]]]:
        """Metric name -> [(label values, value)] in METRICS order; a summary's
        value is (count, sum)."""
        d = self.d
        out = {m.name: [] for m in METRICS}
        rtt, jitter = out["argoctl_path_rtt_seconds"], out["argoctl_path_jitter_seconds"]
        loss, state = out["argoctl_path_loss_ratio"], out["argoctl_path_state"]
        chosen, results = out["argoctl_path_chosen"], out["argoctl_probe_results_total"]
        switches = out["argoctl_path_switches_total"]
        shown = self.destinations()
        for dest in shown:
            dec = d.engine.last(dest)
            written = d.written.get(dest, {})
            for path in d.engine.paths(dest):
                labels = (dest, path)
                if dec is not None:
                    s = dec.scores[path]
                    snap = s.snapshot
                    if snap.srtt_ms is not None:
                        rtt.append((labels, snap.srtt_ms / 1000))
                        jitter.append((labels, snap.jitter_ms / 1000))
                    loss.append((labels, snap.loss))
                    state.append((labels, STATE_VALUE[s.state.value]))
                w = written.get(path, (0, True))[0]
                chosen.append((labels, 1 if w > 0 else 0))
                # a shared stream's results are counted under its first destination;
                # every destination sharing it reports them (they are its measurement)
                counts = d.probe_results(d.engine.sharers(dest, path)[0], path)
                results.append(((dest, path, "ok"), counts["ok"]))
                results.append(((dest, path, "timeout"), counts["timeout"]))
            switches.append(((dest,), d.switches[dest]))
        if d.sched is not None:
            # Rejected replies are counted per socket (path), not per destination.
            for path, counts in d.sched.rejects().items():
                by = {}
                for reason, n in counts.items():
                    r = REJECT_RESULT.get(reason)
                    if r:
                        by[r] = by.get(r, 0) + n
                for r in ("forged", "replayed", "malformed"):
                    results.append((("", path, r), by.get(r, 0)))
        if d.maps is not None:
            self._datapath(out, d.maps, set(shown))
        self._fleet(out, len(d.engine.destinations()) - len(shown))
        return out

    def destinations(self) -> list[str]:
        """The destinations with per-destination series: all of them, or with
        [fleet] the top_n by packets through the datapath (a fleet's Prometheus
        must not grow with every origin of every host: the fleet-wide view is on
        the bus)."""
        d = self.d
        names = list(d.engine.destinations())
        fc = d.cfg.fleet
        if fc is None or len(names) <= fc.top_n:
            return names
        packets = {}
        if d.maps is not None:
            for dest in d.cfg.destinations:
                packets[dest.name] = d.maps.dest_stats(dest.id).packets
        names.sort(key=lambda n: (-packets.get(n, 0), n))
        return sorted(names[:fc.top_n])

    def _fleet(self, out, omitted: int) -> None:
        f = self.d.fleet
        view = f.view if f is not None else None
        b = f.bus if f is not None else None
        out["argoctl_fleet_active"].append(((), 1 if f is not None and f.active else 0))
        out["argoctl_fleet_bus_connected"].append(((), 1 if b is not None and b.connected else 0))
        out["argoctl_fleet_members"].append(
            ((), len(view.live_members(f.wall())) if f is not None else 0))
        out["argoctl_fleet_mode_changes_total"].append(((), f.mode_changes if f else 0))
        from argoctl.fleet.schema import REASONS
        for r in REASONS:
            out["argoctl_fleet_ingest_rejected_total"].append(
                ((r,), view.rejected[r] if view is not None else 0))
        for r, n in (("ok", b.writes if b else 0), ("failed", b.write_errors if b else 0),
                     ("refused", b.refused if b else 0)):
            out["argoctl_fleet_bus_writes_total"].append(((r,), n))
        out["argoctl_fleet_probe_streams"].append(((), len(f.probed) if f is not None else 0))
        out["argoctl_fleet_paced_streams"].append(((), len(f.paces) if f is not None else 0))
        out["argoctl_fleet_polls_total"].append(((), f.polls if f is not None else 0))
        out["argoctl_fleet_destinations_omitted"].append(((), omitted))

    def _datapath(self, out, m: maps.Maps, shown: set) -> None:
        cfg = self.d.cfg
        paths = {p for dest in cfg.destinations for p in dest.paths}
        for path in sorted(paths):
            st = m.path_stats(cfg.path_id(path))
            out["argoctl_datapath_packets_total"].append(((path,), st.packets))
            out["argoctl_datapath_bytes_total"].append(((path,), st.bytes))
            out["argoctl_passive_syn_total"].append(((path,), st.syns))
            out["argoctl_passive_synack_total"].append(((path,), st.synacks))
            out["argoctl_passive_handshake_rtt_seconds"].append(
                ((path,), (st.rtt_count, st.rtt_sum_ns / 1e9)))
        for dest in cfg.destinations:
            if dest.name not in shown:
                continue
            out["argoctl_destination_packets_total"].append(
                ((dest.name,), m.dest_stats(dest.id).packets))

    # prometheus_client's registry protocol (the reference the text is tested against)
    def describe(self):
        return []   # no describe-time collection (the daemon may not be running yet)

    def collect(self) -> Iterable:
        fams = []
        for name, rows in self.samples().items():
            m = BY_NAME[name]
            # prometheus_client appends _total to counters itself
            base = name[:-len("_total")] if m.kind == "counter" else name
            if m.kind == "summary":
                f = SummaryMetricFamily(base, m.help, labels=list(m.labels))
                for labels, (count, total) in rows:
                    f.add_metric(list(labels), count_value=count, sum_value=total)
            else:
                cls = GaugeMetricFamily if m.kind == "gauge" else CounterMetricFamily
                f = cls(base, m.help, labels=list(m.labels))
                for labels, value in rows:
                    f.add_metric(list(labels), value)
            fams.append(f)
        return fams


def _escape(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def exposition(samples: dict[str, list[tuple[tuple[str, ...], object]]]) -> str:
    """The Prometheus text format (0.0.4) of Collector.samples(), as
    generate_latest writes it: HELP and TYPE per metric, labels sorted by
    name, values as Go prints floats, a summary as _count then _sum."""
    out = []
    go = floatToGoString
    for name, rows in samples.items():
        m = BY_NAME[name]
        doc = m.help.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {m.kind}\n")
        # label names in sorted order, with the value positions they come from
        order = sorted(range(len(m.labels)), key=lambda i: m.labels[i])
        keys = [m.labels[i] for i in order]
        cache: dict[tuple[str, ...], str] = {}
        for labels, value in rows:
            lab = cache.get(labels)
            if lab is None:
                lab = cache[labels] = "{" + ",".join(
                    f'{k}="{_escape(labels[i])}"' for k, i in zip(keys, order)) + "}" \
                    if keys else ""
            if m.kind == "summary":
                out.append(f"{name}_count{lab} {go(value[0])}\n{name}_sum{lab} {go(value[1])}\n")
            else:
                out.append(f"{name}{lab} {go(value)}\n")
    return "".join(out)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] not in ("/", "/metrics"):
            self.send_error(404)
            return
        body = self.server.exporter.text().encode()
        gz = "gzip" in self.headers.get("Accept-Encoding", "")
        if gz:
            body = gzip.compress(body, compresslevel=1)   # (level 9 costs more than the text)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        if gz:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args) -> None:   # (no per-scrape line on stderr)
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    exporter: "Exporter"


class _Server6(_Server):
    address_family = socket.AF_INET6


class Exporter:
    """The daemon's metrics: text on demand, optionally over HTTP."""

    def __init__(self, daemon):
        self.collector = Collector(daemon)
        self.server = None
        self.thread = None

    def text(self) -> str:
        return exposition(self.collector.samples())

    def serve(self, listen: str) -> tuple[str, int]:
        """Listen on host:port (in the calling thread's network namespace)."""
        host, port = parse_listen(listen)
        self.server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
        self.server.exporter = self
        self.thread = threading.Thread(target=self.server.serve_forever, name="argoctl-metrics",
                                       daemon=True)
        self.thread.start()
        return host, self.server.server_port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
