"""`argoctl bench peers`: argoctl, babeld and BIRD's BFD in the same lab, same faults.

Each (system, setting) gets a fresh standard lab (argoctl/lab/topo.py) with the
demo's geography (relay1 5 ms, relay2 8 ms each way per hop, direct 0 ms) and
runs alone on it: argoctl as in the demo (edge daemon, relays `up`, GRE), or
babeld / BIRD on every mesh node over a GRE mesh (argoctl/lab/peers.py). The
same traffic generator (argoctl/lab/traffic.py: a request every 1/rate s from
the client, each attempt a new flow, retried after 250 ms, failed after 2 s)
then lives through the same scenarios, one after another, each from a steady
state on the direct path: between scenarios the system is restarted (the same
for all; docs/peers.md says why), after the bench noted how long it took to
come back to direct by itself (back_direct_s).

Which path a request took is read from packets, the same way for every
system: origin's echo service notes the interface each attempt arrived on
(IP_PKTINFO), and a packet socket on edge notes the interface each reply came
in on. An interface named for a relay (ag-relay1, pe-relay1, to-relay1) is
that relay; anything else is direct.

Per scenario, over the impairment (from its first step to its end):
failover_ms  the fault's instant -> first delivery over another path of a request
             that was answered (forward at origin or reply at edge); null: never.
             Only a failover if the system was on direct at the fault
             (`direct_at_fault`: the attempts sent in the 0.5 s before it); the
             target check does not count a move already under way.
             Faults are netem changes sent over rtnetlink from this process,
             encoded in advance (argoctl/lab/faults.py: one send() per link
             end, not the seconds a `tc` process costs in the VM); the instant
             is the return of the last send() of the scenario's first step
ok_pct       requests answered / requests started
median_ms, p95_ms  latency of the answered requests
switches     changes of the forward path between consecutive answered requests
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import sys
import threading
import time
from typing import Optional

import click

from argoctl.bench import peerstrace
from argoctl.bench.report import emit
from argoctl.lab import env as labmod
from argoctl.lab import faults as labfaults
from argoctl.lab import peers as labpeers
from argoctl.lab import topo as netns_topo
from argoctl.lab import traffic as labtraffic
from argoctl.lab.processes import wait_for
from argoctl.lab.scenario import Scenario, parse_scenario

SYSTEMS = ("argoctl", *labpeers.SYSTEMS)
SETTINGS = labpeers.SETTINGS
AT_FAULT_S = 0.5            # the attempts sent this long before a fault must be direct
RATE = 50.0                 # requests per second: 20 ms resolution for failover
DEADLINE_S = 2.0            # as the demo
# argoctl: probes every 50 ms, down after 3 missed (as BFD 50 ms x 3), or its
# defaults (1 s x 3); everything else at its defaults (30 s hold-down, ...).
ARGOCTL_POLICY = {
    "fast": {"probe_interval_ms": 50, "detect_multiplier": 3, "probe_timeout_ms": 150,
             "metrics_listen": ""},
    "default": {"metrics_listen": ""},
}
E, O = "edge", "origin"
SCENARIOS = {
    "outage": {"description": "direct blackholed both ways", "duration": 8,
               "step": [{"at": 0, "link": [E, O], "blackhole": True}]},
    "one-way": {"description": "direct blackholed origin -> edge only (replies lost)",
                "duration": 8,
                "step": [{"at": 0, "link": [E, O], "blackhole": True, "direction": "b->a"}]},
    "brownout": {"description": "direct +100 ms each way, 3% loss", "duration": 12,
                 "step": [{"at": 0, "link": [E, O], "delay": 100, "loss": 3}]},
    "relay-loss": {"description": "relay1 up but its leg to origin dead, direct dead too",
                   "duration": 8,
                   "step": [{"at": 0, "link": [E, O], "blackhole": True},
                            {"at": 0, "link": ["relay1", O], "blackhole": True}]},
    "flapping": {"description": "direct down 1.5 s / up 1.5 s, four times", "duration": 12,
                 "step": [s for k in range(4) for s in (
                     {"at": 3 * k, "link": [E, O], "blackhole": True},
                     {"at": 3 * k + 1.5, "link": [E, O], "clear": True})]},
}
ROW_KEYS = ("system", "setting", "scenario", "failover_ms", "ok_pct", "median_ms", "p95_ms",
            "switches")
UP_TIMEOUT_S = 90           # babeld's defaults (4 s hellos) take a while to route
SETTLE_TIMEOUT_S = 75       # a restarted system settles on direct
# After a scenario, how long a system may take to come back to direct by itself
# before it is restarted: argoctl's hold-down (30 s) and its end; the peers
# come back within seconds. Longer (flap damping) is reported as null.
RETURN_WAIT_S = 45
_TAG = labtraffic.MSG        # client id, request id, attempt


def path_of(ifname: str) -> str:
    """The path an interface name stands for: a relay's name, else direct."""
    return next((r for r in labpeers.RELAYS if r in ifname), "direct")


def scenario(name: str) -> Scenario:
    return parse_scenario({"name": name, **SCENARIOS[name]}, f"<peers:{name}>")


# -- where the traffic went --------------------------------------------------------

class ReplyTap:
    """A packet socket on edge: (time, rid, attempt, ifname) of every echo reply
    arriving at edge (before it is forwarded to the client)."""
    ETH_P_IP = 0x0800
    PACKET_OUTGOING = 4
    # classic BPF on the network header (SOCK_DGRAM): UDP from ECHO_PORT only
    FILTER = [(0x30, 0, 0, 9), (0x15, 0, 4, 17), (0xb1, 0, 0, 0), (0x48, 0, 0, 0),
              (0x15, 0, 1, labtraffic.ECHO_PORT), (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)]

    def __init__(self, host):
        with host.inside():
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                                      socket.htons(self.ETH_P_IP))
        prog = b"".join(struct.pack("HBBI", *i) for i in self.FILTER)
        buf = ctypes.create_string_buffer(prog)
        fprog = struct.pack("HL", len(self.FILTER), ctypes.addressof(buf))
        self.sock.setsockopt(socket.SOL_SOCKET, 26, fprog)       # SO_ATTACH_FILTER
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.settimeout(0.2)
        self.seen: list[tuple[float, int, int, str]] = []
        self._halt = threading.Event()
        self._t = threading.Thread(target=self._loop, name="reply-tap", daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._halt.is_set():
            try:
                pkt, addr = self.sock.recvfrom(256)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            if addr[2] == self.PACKET_OUTGOING or len(pkt) < 20 or pkt[9] != socket.IPPROTO_UDP:
                continue
            ihl = (pkt[0] & 0x0F) * 4
            if len(pkt) < ihl + 8 + _TAG.size or \
                    struct.unpack_from("!H", pkt, ihl)[0] != labtraffic.ECHO_PORT:
                continue
            _, rid, att = _TAG.unpack_from(pkt, ihl + 8)
            self.seen.append((now, rid, att, addr[0]))

    def stop(self) -> None:
        self._halt.set()
        self._t.join(5)
        self.sock.close()


# -- the lab with one system ----------------------------------------------------------

class PeersEnv(labmod.LabEnv):
    """The standard lab with the demo's geography and ONE system routing it."""

    def __init__(self, system: str, setting: str, prefix: str,
                 directory: Optional[str] = None, topo=None):
        """topo: a started standard lab to run on (with the geography, see
        `geography`), left standing by stop(); None: a fresh one of our own."""
        if system not in SYSTEMS or setting not in SETTINGS:
            raise ValueError(f"unknown system/setting {system}/{setting}")
        super().__init__(prefix, tunnels="gre", directory=directory,
                         policy=ARGOCTL_POLICY[setting] if system == "argoctl" else {})
        self.system, self.setting = system, setting
        self.mesh = self.tap = self.client = None
        self.edge: Optional[peerstrace.EdgeDaemon] = None     # argoctl's
        self._lives = 0                 # argoctl's edge daemons started (a log each)
        self._shared = topo
        self._base.update(labmod.GEOGRAPHY)
        self.faults: Optional[labfaults.Faults] = None
        # (before the first message, after the last ack) of each step applied
        self.applying: list[tuple[float, float]] = []

    def apply(self, step) -> None:
        if self.faults is None:
            t0 = time.monotonic()
            super().apply(step)
            self.applying.append((t0, time.monotonic()))
            return
        self.applying.append(self.faults.apply(self.topo.link(step.a, step.b), step.direction,
                                               **self.netem_of(step)))

    def clear(self, a: str, b: str, direction: str = "both") -> None:
        if self.faults is None:
            super().clear(a, b, direction)
        else:
            self.faults.apply(self.topo.link(a, b), direction, delay_ms=self.base_delay(a, b))

    @staticmethod
    def geography(topo) -> None:
        """The demo's per-hop delays on a started standard lab."""
        for (a, b), ms in labmod.GEOGRAPHY.items():
            topo.link(a, b).impair(delay_ms=ms)

    def start(self) -> "PeersEnv":
        from argoctl.lab.loop import LoopLab
        try:
            t = self.topo = self._shared or netns_topo.Topology.default(self.prefix)
            if self._shared is None:
                t.start()
                self.geography(t)
            if self.system == "argoctl":
                # the edge's daemon and origin's responder each a process of its
                # own, as babeld and BIRD are (peerstrace.py: why)
                self.loop = LoopLab(t, self.directory, self.policy, tunnels="gre",
                                    responder_process=True)
                self.loop.start(daemon=False)
                self._start_edge()
            else:
                self.mesh = labpeers.PeerMesh(t, self.system, self.setting,
                                              self.directory).start()
            self.echo = labtraffic.EchoServer(t[O], netns_topo.ORIGIN_SERVER[0], ingress=True)
            self.tap = ReplyTap(t[E])
            if self.netem:
                self.faults = labfaults.Faults(t).open(
                    [t.link(a, b) for a, b in {(s["link"][0], s["link"][1])
                                               for sc in SCENARIOS.values() for s in sc["step"]}])
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self) -> None:
        """The system restarted on the standing lab, the same for every system,
        so that what it learnt in one scenario (hold-downs, flap penalties, BFD
        and babel state) does not carry into the next: argoctl's edge daemon
        (it adopts its running datapath, as a `systemctl restart` does), or
        babeld / BIRD on every node."""
        if self.system == "argoctl":
            self._stop_edge()
            self._start_edge()
        else:
            self.mesh.restart()

    def up(self) -> bool:
        """The system routes: argoctl has chosen direct with every path up; a
        peer has put its routes into the table client traffic uses."""
        if self.system == "argoctl":
            return self.edge.routes_direct()
        self.mesh.check_running()
        return self.mesh.routed()

    def start_traffic(self, rate: float) -> None:
        self.client = labtraffic.RequestClient(self.topo["client"], netns_topo.ORIGIN_SERVER[0],
                                   rate=rate, client_id=7, deadline=DEADLINE_S)

    def _start_edge(self) -> None:
        self._lives += 1
        self.edge = peerstrace.EdgeDaemon(
            self.loop, os.path.join(self.directory, f"edge-daemon-{self._lives}.log"))

    def _stop_edge(self) -> None:
        edge, self.edge = self.edge, None
        if edge is not None:
            edge.stop()

    def stop(self) -> None:
        try:
            self._stop_edge()       # before the lab detaches its datapath
        except Exception as e:      # keep tearing down
            click.echo(f"bench peers: stopping argoctl's edge daemon: {e}", err=True)
        for x in (self.client, self.tap, self.mesh):
            if x is not None:
                try:
                    x.stop()
                except Exception as e:      # keep tearing down
                    click.echo(f"bench peers: stopping {type(x).__name__}: {e}", err=True)
        self.client = self.tap = self.mesh = None
        if self._shared is not None and self.topo is not None:
            self.clear_all()            # the lab outlives us: leave it as we found it
            self.topo = None
        if self.faults is not None:
            self.faults.close()
            self.faults = None
        super().stop()

    @staticmethod
    def loop_wait(pred, timeout: float, step: float = 0.2) -> bool:
        return wait_for(pred, timeout, step)

    # -- reading the traffic -----------------------------------------------------------

    def answered(self, since: float, until: float) -> list[dict]:
        """Requests started in [since, until), finished, with the path of the
        answered attempt: fwd/ret interface, times."""
        replies: dict[int, tuple] = {}
        for t, rid, att, ifname in list(self.tap.seen):
            if rid not in replies:
                replies[rid] = (t, att, ifname)
        arrivals = {(rid, att): (t, ifname) for t, rid, att, ifname in list(self.echo.seen)}
        out = []
        for r in list(self.client.requests):
            if not (since <= r.started < until and r.done):
                continue
            row = {"started": r.started, "ok": r.latency is not None, "latency": r.latency}
            rep = replies.get(r.rid)
            if row["ok"] and rep is not None:
                att = rep[1]
                fwd = arrivals.get((r.rid, att))
                row.update(ret_at=rep[0], ret=path_of(rep[2]),
                           sent_at=r.sent[att] if att < len(r.sent) else None,
                           fwd_at=fwd[0] if fwd else None,
                           fwd=path_of(fwd[1]) if fwd else None)
            out.append(row)
        return out

    def steady_direct(self, seconds: float = 2.0) -> bool:
        """The last `seconds` of finished requests: >= 90% answered, all both ways direct."""
        now = time.monotonic()
        rows = self.answered(now - seconds - DEADLINE_S, now - DEADLINE_S)
        ok = [r for r in rows if r["ok"]]
        return len(rows) >= 10 and len(ok) >= 0.9 * len(rows) and \
            all(r.get("fwd") == "direct" and r.get("ret") == "direct" for r in ok)


def at_fault(rows: list[dict], t_imp: float) -> dict:
    """`direct_at_fault`: every answered attempt sent in the AT_FAULT_S before the
    fault went direct both ways (and some were). By the attempt, not the request:
    a request sent just before a fault is answered by its retry, sent after it,
    over the path moved to. When not, `off_direct_before` lists the attempts that
    were elsewhere (sent at seconds from the fault, fwd, ret: up to five), so a
    reader can tell a move from a stray pinned flow."""
    sent = [r for r in rows if r["ok"] and r.get("sent_at") is not None
            and t_imp - AT_FAULT_S <= r["sent_at"] < t_imp]
    off = [{"sent_s": round(r["sent_at"] - t_imp, 3), "fwd": r.get("fwd"), "ret": r.get("ret")}
           for r in sent if not (r.get("fwd") == "direct" and r.get("ret") == "direct")]
    out = {"direct_at_fault": bool(sent) and not off}
    if off:
        out["off_direct_before"] = off[:5]
    return out


def metrics(rows: list[dict], t_imp: float) -> dict:
    """The issue's metrics over one scenario's requests (see the module docstring)."""
    ok = [r for r in rows if r["ok"]]
    lat = sorted(r["latency"] * 1000 for r in ok)
    moved = [at for r in ok for path, at in ((r.get("fwd"), r.get("fwd_at")),
                                             (r.get("ret"), r.get("ret_at")))
             if path not in (None, "direct") and at is not None and at >= t_imp]
    seq = [r["fwd"] for r in sorted((r for r in ok if r.get("fwd_at") is not None),
                                    key=lambda r: r["fwd_at"])]
    paths: dict[str, int] = {}
    for r in ok:
        label = r.get("fwd") if r.get("fwd") == r.get("ret") else f"{r.get('fwd')}/{r.get('ret')}"
        paths[label] = paths.get(label, 0) + 1
    q = labtraffic._quantile
    return {"failover_ms": round((min(moved) - t_imp) * 1000, 1) if moved else None,
            "ok_pct": round(100.0 * len(ok) / len(rows), 2) if rows else None,
            "median_ms": None if not lat else round(q(lat, 0.5), 2),
            "p95_ms": None if not lat else round(q(lat, 0.95), 2),
            "switches": sum(1 for a, b in zip(["direct", *seq], seq) if a != b),
            "requests": len(rows), "paths": paths}


def warm_up(system: str, setting: str) -> float:
    """Seconds after a peer's first route until its other routes are in too: three
    babeld hellos (its neighbours' routes arrive with their updates), a few BFD
    intervals for BIRD's sessions via the relays."""
    if system == "babeld":
        return 3 * (float(labpeers.BABEL_FAST["hello-interval"]) if setting == "fast" else 4.0) + 1
    return 2.0 if system == "bird-bfd" else 0.0


def run_system(system: str, setting: str, scenarios: list[str], *, rate: float = RATE,
               say=lambda m: None, prefix: Optional[str] = None, topo=None,
               log_dir: Optional[str] = None, last_return: bool = False) -> list[dict]:
    """`system` at `setting` alone on a lab (a fresh one, or `topo`: a started
    standard lab with the geography); each scenario in turn; a row each.
    Between scenarios: how long the system took to come back to direct by
    itself (`back_direct_s`, up to RETURN_WAIT_S), then it is restarted, so
    that every scenario starts from a fresh system settled on direct (the
    same for all; see docs/peers.md). last_return: the last scenario's
    `back_direct_s` too. log_dir: argoctl's decision log per scenario."""
    env = PeersEnv(system, setting, prefix or f"agpr{os.getpid()}", topo=topo)
    rows, trace = [], None
    try:
        t_start = time.monotonic()
        say(f"{system}/{setting}: starting the lab ({env.prefix}-*)")
        env.start()
        _come_up(env, say, t_start)
        if system == "argoctl" and log_dir:
            trace = peerstrace.DecisionTrace(env.edge)
        env.start_traffic(rate)
        t_end = time.monotonic()
        for i, name in enumerate(scenarios):
            sc = scenario(name)
            if i:
                t_restart = time.monotonic()
                env.restart()
                if trace is not None:
                    trace.edge = env.edge
                _come_up(env, say, t_restart, "restarted")
            t_wait = time.monotonic()
            settled = env.loop_wait(env.steady_direct, SETTLE_TIMEOUT_S)
            settle = {"settle_s": round(time.monotonic() - t_wait, 1)}
            if system == "argoctl":
                settle["standing_before"] = peerstrace.standing(env.edge)
            say(f"{system}/{setting}/{name}: " + ("playing" if settled else
                                                  "not steady on direct; playing anyway: "
                                                  f"{settle.get('standing_before')}"))
            env.applying.clear()
            t_play = time.monotonic()
            end = labmod.play(env, sc)
            time.sleep(DEADLINE_S + 0.3)        # the window's last requests finish
            # the fault's instant: its last send() returned (rtnetlink applies it inside)
            t_imp = env.applying[0][1] if env.applying else t_play
            row = {"bench": "peers", "system": system, "setting": setting, "scenario": name,
                   **metrics(env.answered(t_imp, end), t_imp), "settled_before": settled,
                   **at_fault(env.answered(t_imp - AT_FAULT_S - DEADLINE_S, t_imp), t_imp),
                   "duration_s": round(end - t_imp, 1), "rate_per_s": rate,
                   # the first step's sends took this long (first to last);
                   # failover counts from the last
                   "impair_apply_ms": round(1000 * (t_imp - env.applying[0][0]), 1)
                   if env.applying else None,
                   "fault": "netlink" if env.faults is not None else "tc", **settle}
            if system == "argoctl":
                row["to_direct"] = peerstrace.returns_to_direct(env.edge, t_imp, end)
            if i + 1 < len(scenarios) or last_return:
                row.update(back_on_direct(env, end))
            if trace is not None:
                log = os.path.join(log_dir, f"{system}-{setting}-{name}.jsonl")
                trace.dump(log, t_imp, t_end, time.monotonic(), head=row)
                row["decision_log"] = log
            t_end = time.monotonic()
            say(f"{system}/{setting}/{name}: failover {row['failover_ms']} ms, ok "
                f"{row['ok_pct']}%, median {row['median_ms']} ms, p95 {row['p95_ms']} ms, "
                f"{row['switches']} switches, paths {row['paths']}, back on direct after "
                f"{row.get('back_direct_s', '(not measured)')} s")
            rows.append(row)
    finally:
        if trace is not None:
            trace.stop()
        env.stop()
    return rows


def _come_up(env: PeersEnv, say, t0: float, what: str = "up") -> None:
    """Until the system routes (a peer: fatal if not within UP_TIMEOUT_S), then
    its warm-up."""
    system, setting = env.system, env.setting
    up = env.loop_wait(env.up, UP_TIMEOUT_S)
    if not up and system != "argoctl":
        raise labpeers.PeerError(f"{system} ({setting}) did not come up within "
                                 f"{UP_TIMEOUT_S} s" + _outputs(env))
    # argoctl routes from the start (direct is its fallback): not having measured
    # every path yet (a starved VM) is noted, not fatal
    say(f"{system}/{setting}: " + (f"{what} after {time.monotonic() - t0:.1f} s" if up
                                   else f"paths still in doubt after {UP_TIMEOUT_S} s"))
    time.sleep(warm_up(system, setting))     # the alternatives learned too


def back_on_direct(env: PeersEnv, end: float) -> dict:
    """After a scenario's end: when the system, by itself, carried every request
    over direct both ways again: `back_direct_s`, the start of the last request
    that did not (answered or not), in seconds after the end (0: none); None if
    not steady on direct within RETURN_WAIT_S. argoctl: its standing then
    (`standing_after`: which path holds it, penalty, hold-down)."""
    back = env.loop_wait(env.steady_direct, RETURN_WAIT_S)
    out: dict = {"back_direct_s": None}
    if back:
        rows = env.answered(end, time.monotonic() - DEADLINE_S)
        off = [r["started"] for r in rows
               if not (r["ok"] and r.get("fwd") == "direct" and r.get("ret") == "direct")]
        out["back_direct_s"] = round(max(off) - end, 1) if off else 0.0
    if env.system == "argoctl":
        out["standing_after"] = peerstrace.standing(env.edge)
    return out


def _outputs(env: PeersEnv) -> str:
    if env.mesh is None:
        return ""
    return "".join(f"\n--- {n}:\n{env.mesh.output(n).strip()[-600:]}" for n in labpeers.NODES)


# -- the verdict ---------------------------------------------------------------------

def target(rows: list[dict]) -> dict:
    """Per scenario: argoctl-fast's ok_pct >= the best peer's, and its failover
    within 10% of the best peer's (or better; a peer that never moved is beaten
    by any failover, and one that did beats an argoctl that did not)."""
    out = {}
    for name in dict.fromkeys(r["scenario"] for r in rows):
        mine = next((r for r in rows if r["scenario"] == name and r["system"] == "argoctl"
                     and r["setting"] == "fast"), None)
        peers = [r for r in rows if r["scenario"] == name and r["system"] != "argoctl"
                 and r.get("ok_pct") is not None]
        if mine is None or mine.get("ok_pct") is None or not peers:
            continue
        best_ok = max(r["ok_pct"] for r in peers)
        # A system already off direct when the fault came did not fail over
        # because of it: its first move is no failover time (for argoctl too).
        fo = [r["failover_ms"] for r in peers
              if r["failover_ms"] is not None and r.get("direct_at_fault", True)]
        best_fo = min(fo) if fo else None
        ok_met = mine["ok_pct"] >= best_ok
        fo_met = mine.get("direct_at_fault", True) and (
            best_fo is None or (mine["failover_ms"] is not None
                                and mine["failover_ms"] <= 1.1 * best_fo))
        out[name] = {"ok_pct": mine["ok_pct"], "best_peer_ok_pct": best_ok,
                     "failover_ms": mine["failover_ms"], "best_peer_failover_ms": best_fo,
                     "met": ok_met and fo_met}
    return out


def table(rows: list[dict]):
    from rich.table import Table
    t = Table(title="argoctl vs babeld vs BIRD+BFD (same lab, same faults, same traffic)")
    for col in ("scenario", "system", "setting", "failover", "ok", "median", "p95", "switches"):
        t.add_column(col, justify="left" if col in ("scenario", "system", "setting") else "right")
    ms = lambda v: "-" if v is None else f"{v:.0f} ms"     # noqa: E731
    for r in sorted(rows, key=lambda r: (list(SCENARIOS).index(r["scenario"]),
                                         SYSTEMS.index(r["system"]), r["setting"])):
        if r.get("error"):
            t.add_row(r["scenario"], r["system"], r["setting"], "error", "-", "-", "-", "-")
            continue
        t.add_row(r["scenario"], r["system"], r["setting"], ms(r["failover_ms"]),
                  "-" if r["ok_pct"] is None else f"{r['ok_pct']:.1f}%", ms(r["median_ms"]),
                  ms(r["p95_ms"]), str(r["switches"]))
    return t


@click.command("peers")
@click.option("--system", "systems", multiple=True, type=click.Choice(SYSTEMS),
              help="Repeatable; default: all.")
@click.option("--setting", "settings", multiple=True, type=click.Choice(SETTINGS),
              help="Repeatable; default: both.")
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(list(SCENARIOS)),
              help="Repeatable; default: all.")
@click.option("--rate", type=click.FloatRange(min=5, max=200), default=RATE, show_default=True,
              help="Requests per second.")
@click.option("--json", "as_json", is_flag=True,
              help="Only JSON lines on stdout (the table still goes to stderr).")
@click.option("--log-dir", type=click.Path(file_okay=False), default=None,
              help="Write argoctl's decision log per scenario here (JSON lines: each "
                   "path's changes of standing and each decision, from before the "
                   "settle wait to the end of the scenario).")
def bench_peers(systems, settings, scenarios, rate, as_json, log_dir) -> None:
    """argoctl, babeld (type tunnel, RTT-aware) and BIRD (static routes + BFD)
    each alone on the standard lab over GRE, through the same scenarios with
    the same traffic: failover ms, requests ok %, median/p95 latency, path
    switches. One JSON object per (system, setting, scenario), then the target
    check; a table on stderr. Needs GRE and netem: runs in the VM if this
    kernel lacks them."""
    from argoctl.lab.demo import in_vm_or_here
    if log_dir:
        # absolute and made here, so the VM writes it where the caller looks
        log_dir = os.path.abspath(log_dir)
        os.makedirs(log_dir, exist_ok=True)
    argv = ["bench", "peers", *sum((["--system", s] for s in systems), []),
            *sum((["--setting", s] for s in settings), []),
            *sum((["--scenario", s] for s in scenarios), []), "--rate", str(rate)] \
        + (["--json"] if as_json else []) + (["--log-dir", log_dir] if log_dir else [])
    rc = in_vm_or_here(argv, rwdirs=(log_dir,) if log_dir else ())
    if rc is not None:
        sys.exit(rc)
    from rich.console import Console
    err = Console(stderr=True)
    labmod.raise_on_sigterm()
    rows, failed = [], []
    for system in systems or SYSTEMS:
        for setting in settings or SETTINGS:
            try:
                got = run_system(system, setting, list(scenarios or SCENARIOS), rate=rate,
                                 log_dir=log_dir, last_return=True,
                                 say=lambda m: err.print(f"bench peers: {m}", highlight=False,
                                                         markup=False))
            except (labpeers.PeerError, netns_topo.TopologyError) as e:
                failed.append(f"{system}/{setting}")
                err.print(f"bench peers: {system}/{setting} failed: {e}", markup=False)
                got = [{"bench": "peers", "system": system, "setting": setting,
                        "scenario": name, "error": str(e).splitlines()[0],
                        **{k: None for k in ROW_KEYS[3:]}}
                       for name in (scenarios or SCENARIOS)]
            for r in got:
                emit(r)
            rows += got
    emit({"bench": "peers-target", "target": target(rows)})
    Console(stderr=True, width=120).print(table(rows))
    if failed:
        raise click.ClickException(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    bench_peers()
