"""The datapath's passive counters (maps.py: path_stats, dest_stats) as the
daemon reads them: every round, per-path deltas of SYNs, SYN-ACKs and handshake
RTTs into the engine and fleet mode's demand evidence; between rounds, the
cumulative SYN counts of fleet mode's looks (rates.Evidence.look); and packets
per destination, which tell fleet mode an idle destination."""

from __future__ import annotations


class PassiveCounters:
    def __init__(self, cfg):
        self.cfg = cfg
        self.prev: dict[str, tuple[int, ...]] = {}     # path -> counters at the last round
        self.paths = sorted({p for d in cfg.destinations for p in d.paths})

    def syns(self, maps, path: str) -> tuple[int, int]:
        """A path's cumulative (SYNs, SYN-ACKs), SYNs counted as poll() counts them."""
        st = maps.path_stats(self.cfg.path_id(path))
        return st.syns + st.reroutes, st.synacks

    def poll(self, maps, engine, fleet, now: float, count_traffic: bool) -> None:
        """One round's deltas into `engine` (and `fleet`, None without fleet mode).
        `count_traffic`: the datapath sees every packet to a destination (no
        local socket steering: sockets are marked at connect, not counted), so
        fleet mode may call a destination without packets idle."""
        for path in self.paths:
            st = maps.path_stats(self.cfg.path_id(path))
            cur = (st.syns, st.synacks, st.rtt_sum_ns, st.rtt_count, st.reroutes)
            prev = self.prev.get(path)
            self.prev[path] = cur
            if prev is None:
                continue     # first read: counters from before this run are history
            dsyn, dack, dsum, dcount, dmoved = (max(0, c - p) for c, p in zip(cur, prev))
            # A flow rerouted off the path is a SYN it left unanswered for an RTO:
            # without the reroute it would have been retransmitted there, and
            # counted as one more unanswered SYN. Same evidence, either way.
            dsyn += dmoved
            if dsyn or dack or dcount:
                samples = [dsum / dcount / 1e9] if dcount else []
                engine.on_path_passive(path, dsyn, dack, samples, now)
                if fleet is not None:
                    fleet.on_passive(path, dsyn, dack)
        if fleet is not None and count_traffic:
            fleet.on_traffic({d.name: maps.dest_stats(d.id).packets
                              for d in self.cfg.destinations}, now)
