"""The Prometheus metrics argoctl exports: names, kinds, labels, help.

This list is the contract between the exporter (argoctl/metrics.py), the
Grafana dashboard (contrib/grafana/argoctl-dashboard.json, checked against it
by tests/unit/test_vagrant.py) and docs/metrics.md. Renaming a metric breaks
users' dashboards and alerts: add, don't rename.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "summary"]

# argoctl_path_state values (the estimator's reachability state machine).
PATH_STATES = {0: "down", 1: "suspect", 2: "up"}
# argoctl_probe_results_total{result=...}: every probe ends in exactly one.
PROBE_RESULTS = ("ok", "timeout", "forged", "replayed", "malformed")


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str

    @property
    def series(self) -> tuple[str, ...]:
        """Names of the time series Prometheus stores for it. A summary is
        exported as _sum and _count (the datapath keeps a sum and a count)."""
        if self.kind == "summary":
            return (self.name + "_sum", self.name + "_count")
        return (self.name,)


METRICS: tuple[Metric, ...] = (
    Metric("argoctl_path_rtt_seconds", "gauge", ("dest", "path"),
           "Smoothed round-trip time of active probes on the path."),
    Metric("argoctl_path_jitter_seconds", "gauge", ("dest", "path"),
           "Smoothed variation of the probe round-trip time."),
    Metric("argoctl_path_loss_ratio", "gauge", ("dest", "path"),
           "Fraction of probes lost over the loss window (0..1)."),
    Metric("argoctl_path_state", "gauge", ("dest", "path"),
           "Reachability state: 0 down, 1 suspect, 2 up."),
    Metric("argoctl_path_chosen", "gauge", ("dest", "path"),
           "1 if new flows to the destination take this path, else 0."),
    Metric("argoctl_path_switches_total", "counter", ("dest",),
           "Changes of the chosen path for the destination."),
    Metric("argoctl_probe_results_total", "counter", ("dest", "path", "result"),
           "Probe outcomes: ok, timeout, forged, replayed, malformed."),
    Metric("argoctl_datapath_packets_total", "counter", ("path",),
           "Packets the eBPF datapath steered onto the path."),
    Metric("argoctl_datapath_bytes_total", "counter", ("path",),
           "Bytes the eBPF datapath steered onto the path."),
    Metric("argoctl_destination_packets_total", "counter", ("dest",),
           "Packets the datapath matched to the destination's prefixes."),
    Metric("argoctl_passive_syn_total", "counter", ("path",),
           "TCP SYNs sent through the path (passive signal)."),
    Metric("argoctl_passive_synack_total", "counter", ("path",),
           "TCP SYN-ACKs received for SYNs sent through the path."),
    Metric("argoctl_passive_handshake_rtt_seconds", "summary", ("path",),
           "TCP handshake time (SYN to SYN-ACK) through the path."),
    # fleet mode ([fleet], docs/fleet.md); 0 without it
    Metric("argoctl_fleet_active", "gauge", (),
           "1 while relay paths are composed from the fleet bus, 0 while every path is "
           "probed locally (bus lost, or no [fleet])."),
    Metric("argoctl_fleet_bus_connected", "gauge", (),
           "1 while connected to a NATS server of the fleet."),
    Metric("argoctl_fleet_members", "gauge", (),
           "Fleet members whose membership record is younger than the TTL."),
    Metric("argoctl_fleet_mode_changes_total", "counter", (),
           "Switches between fleet mode and local probing."),
    Metric("argoctl_fleet_ingest_rejected_total", "counter", ("reason",),
           "Bus values ignored: schema, absurd, stale, impostor, mismatch."),
    Metric("argoctl_fleet_bus_writes_total", "counter", ("result",),
           "Bus writes: ok, failed, refused (by the server's permissions)."),
    Metric("argoctl_fleet_probe_streams", "gauge", (),
           "(destination, path)s probed end to end (the rest are composed from the bus)."),
    Metric("argoctl_fleet_paced_streams", "gauge", (),
           "Of those, probed slower than every interval (docs/fleet.md, Probe rates)."),
    Metric("argoctl_fleet_polls_total", "counter", (),
           "Streams put back to the full rate and probed at once (demand lapsed, doubt)."),
    Metric("argoctl_fleet_destinations_omitted", "gauge", (),
           "Destinations left out of the per-destination series ([fleet] top_n)."),
)

BY_NAME = {m.name: m for m in METRICS}
NAMES = frozenset(BY_NAME)
# Every series name a query may reference.
SERIES = frozenset(s for m in METRICS for s in m.series)
