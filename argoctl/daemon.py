"""`argoctl run`: apply the config, attach the datapath, and run the measurement loop.

    measurements (probes, datapath counters) --> estimators --> decisions --> eBPF maps

Start-up (`Daemon.setup`, in the caller's thread):
  1. take the single-instance lock (`argoctl.pid`; `up` and `down` refuse then);
  2. `up`'s stages (apply.py: links, nft, datapath, maps), rolled back whole on
     any failure. The maps' first contents come from _adopt: path sets already
     in the maps are kept, and the engine starts from their choice: a restarted
     daemon changes nothing until its measurements say so (hitless restart).
     Otherwise the first path set (config.first_weights, as `up` writes it).

The loop (`Daemon.serve`, asyncio, in the node's network namespace so the
probe sockets open there):
  - probers for every (destination, path) with a probe, each through the
    path's mark, faster while the engine has the path in doubt;
  - every probe interval ("round"; in fleet mode also at once when a choice on
    demand leaves a SYN unanswered): the datapath's passive counters per path
    go to the engine, then every destination is decided; destinations with a
    path in doubt also every interval / fast_divisor; a probe result that
    changes a path's state, or a path's detection time (Engine.due), decides
    its destinations at once;
  - a decision whose weights differ from the maps is written (a round's in one
    batch), logged as one JSON line with its reason, counted in the metrics;
  - the live choices go to `state.json` (atomic rename) for status/explain.

Stopping (SIGTERM, or a crash) leaves the datapath and the last decisions in
the maps, so traffic keeps its paths while no daemon runs; `cleanup=True`
(`--cleanup`) instead detaches the datapath and runs `down`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from argoctl import home as homes, keys, maps, netlink, service, watch
from argoctl.config import Config, choice_of  # noqa: F401  (re-exported)
from argoctl.datapath import pathset  # noqa: F401  (re-exported)
from argoctl.engine import Decision, Engine
from argoctl.estimator import State
from argoctl.passive import PassiveCounters
from argoctl.probe.source import lan_sources

log = logging.getLogger("argoctl.daemon")

from argoctl.statefile import *  # noqa: F401,F403
from argoctl.statefile import _JSTR, _json, _path_json, _written_json

from argoctl.config.model import FAST_DIVISOR  # noqa: E402,F401  (Policy.timing: one place)
# Fast probing is for a few paths in doubt: probing many faster (start-up, a stalling host)
# loads a short host, makes replies late and puts more in doubt. At most this share goes fast.
FAST_SHARE = 0.125
FAST_MIN = 16
STATE_REFRESH_S = 5.0        # state.json is rewritten at least this often (scores age)
HISTORY = 10000              # decisions remembered in memory (tests, debugging)


# -- decisions -> maps -------------------------------------------------------------

def weights_of(cfg: Config, dest_paths: tuple[str, ...],
               paths: list[maps.Path]) -> Optional[dict[str, tuple[int, bool]]]:
    """The inverse of `pathset`: None if the set does not hold exactly these paths
    (in this order) with their marks, i.e. it was written for another config."""
    if len(paths) != len(dest_paths):
        return None
    out = {}
    for name, p in zip(dest_paths, paths):
        pid = cfg.path_id(name)
        if p.path_id != pid or p.mark != cfg.routing.mark(pid):
            return None
        out[name] = (p.weight, p.up)
    return out


def initial_weights(cfg: Config, dest) -> dict[str, tuple[int, bool]]:
    """Before any measurement: config.first_weights, the rule `up` follows too."""
    return dest.first_weights()


@dataclass
class Options:
    ns: Optional[str] = None                 # network namespace (None: the current one)
    run_dir: Optional[str] = None            # default: apply.default_run_dir()
    cgroup: Optional[str] = "auto"           # socket hooks; None: no local steering
    metrics_listen: Optional[str] = None     # None: policy.metrics_listen; "": off
    apply_config: bool = True                # run the up pipeline first
    cleanup: bool = False                    # on stop: detach and `down`
    fast_divisor: Optional[float] = None     # default: policy.timing.fast_divisor
    key: object = None                       # an EchoKey (default: policy's key file)
    # Once running, move all built so far out of the cyclic GC's sight (full collections
    # walking ~100k objects cost ~1% of a core at 1,000 x 4): for `argoctl run`, not tests.
    freeze_heap: bool = False


@dataclass
class Record:
    """One logged decision (kept in memory for tests and debugging)."""
    at: float
    dest: str
    choice: str
    previous: Optional[str]
    weights: dict
    reason: str
    tiers: dict = field(default_factory=dict)    # path -> usable/held/suspect/unknown/down

    def to_dict(self) -> dict:
        return {"event": "decision", "at": round(self.at, 3), "dest": self.dest,
                "choice": self.choice, "previous": self.previous,
                "weights": {p: [w, "up" if up else "down"] for p, (w, up) in self.weights.items()},
                "reason": self.reason}


class Daemon:
    def __init__(self, cfg: Config, opts: Optional[Options] = None,
                 clock: Callable[[], float] = time.monotonic):
        from argoctl.apply import default_run_dir
        self.cfg = cfg
        self.opts = opts or Options()
        self.run_dir = self.opts.run_dir or default_run_dir()
        self.home = homes.locate(self.opts.ns, self.run_dir)    # pins, state: one place
        self.state_dir = self.home.state_dir
        self.state_file = os.path.join(self.state_dir, STATE_FILE)
        self.clock = clock
        self.interval = cfg.policy.timing.interval_s
        if self.opts.fast_divisor is None:
            self.opts.fast_divisor = cfg.policy.timing.fast_divisor
        self.engine: Optional[Engine] = None    # made by setup(): its clock starts there
        self.dests = {d.name: d for d in cfg.destinations}
        self._prefixes = {d.name: [str(p) for p in d.prefixes] for d in cfg.destinations}
        self.lock = InstanceLock(self.state_dir)
        self.maps: Optional[maps.Maps] = None
        self.sched = None
        self.fleet = None                        # argoctl.fleet.agent.FleetAgent with [fleet]
        self.exporter = None
        self.watch = None
        self.probe_sources: dict[int, str] = {}
        self.attach_result = None
        self.adopted: dict[str, bool] = {}
        self.written: dict[str, dict[str, tuple[int, bool]]] = {}   # what the maps hold
        self.chosen_since: dict[str, float] = {}
        self.switches: Counter = Counter()
        self.map_writes = 0
        self.rounds = 0
        self.history: deque[Record] = deque(maxlen=HISTORY)
        self.started_wall = time.time()
        self.passive = PassiveCounters(cfg)
        self._doubt: set[str] = set()            # destinations with a path not up
        n_paths = sum(len(d.paths) for d in cfg.destinations)
        self._doubt_paths = n_paths               # at start every path is unknown
        self._retimed: set[tuple[str, str]] = set()   # (dest, path)s last seen in doubt
        self.fast_budget = (max(FAST_MIN, int(n_paths * FAST_SHARE)),
                            max(FAST_MIN, int(len(self.dests) * FAST_SHARE)))
        self._pending: set[str] = set()
        self._pending_handle = None
        self._deadline: Optional[float] = None   # the engine's next detection time (due())
        self._state_written_at = -1e9
        self._state_static: Optional[list] = None    # state_text's per-destination constants
        self._state_dirty = True
        self._stop: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._thread_error: Optional[BaseException] = None
        self.ready = threading.Event()

    # -- start-up ---------------------------------------------------------------

    def setup(self) -> None:
        """Lock, then `up`'s stages (apply.py: links, nft, datapath, maps; the maps' first
        contents from _adopt). A failure rolls back this start-up, raises DaemonError."""
        from argoctl import apply
        self.lock.acquire()
        try:
            if self.opts.key is None:
                self.opts.key = self._read_key()
            damaged = self._damaged_state_file()
            stages = apply.STAGE_NAMES if self.opts.apply_config else ("datapath", "maps")
            ctx = apply.up(self.cfg, ns=self.opts.ns, run_dir=self.run_dir, stages=stages,
                           cgroup=self.opts.cgroup, pathsets=self._adopt, lock=False)
            for w in damaged + ctx.warnings:     # started anyway: said what was done
                log.warning(json.dumps({"event": "run_file_damaged", "message": w}))
            self.attach_result = ctx.attach
            self.maps = maps.Maps(self.home.pin_dir)
            # probes see what data sees: sourced from the steered LAN (probe/source.py)
            self.probe_sources = lan_sources(self.opts.ns, self.cfg.node.steer_interfaces)
            if self.cfg.fleet is not None:
                self._fleet_setup()
        except BaseException:
            self.close()
            raise
        now = self.clock()
        for name in self.dests:
            self.chosen_since[name] = now
        log.info(json.dumps({
            "event": "start", "node": self.cfg.node.name, "config": self.cfg.path,
            "datapath": "compiled" if self.attach_result.compiled else "adopted",
            "adopted_decisions": sorted(d for d, a in self.adopted.items() if a),
            "destinations": len(self.dests), "pid": os.getpid()}))

    def _damaged_state_file(self) -> list[str]:
        """A damaged state file is only the last run's output: said, then replaced."""
        try:
            read_state(self.state_file)
        except FileNotFoundError:
            pass
        except ValueError as e:
            return [f"{e}: replaced by this run's state"]
        return []

    def _fleet_setup(self) -> None:
        """Fleet mode's cell (nothing of it is imported without [fleet]); the bus
        itself connects in serve(), and failing to connect is never fatal."""
        from argoctl.fleet.agent import FleetAgent
        from argoctl.keys import KeyFileError
        try:
            self.fleet = FleetAgent(self.cfg, self.engine, clock=self.clock)
        except KeyFileError as e:
            raise DaemonError(f"{self.cfg.path}: fleet.credentials_file: {e}") from None
        self.engine.overlay = self.fleet.overlay

    def _read_key(self):
        if not any(d.probe and d.probe.kind == "udp" for d in self.cfg.destinations):
            return None
        from argoctl import mac
        f = self.cfg.policy.responder_key_file
        if not f:
            raise DaemonError(f"{self.cfg.path}: udp probes need policy.responder_key_file")
        if "\0" not in f and not os.path.lexists(f):   # validate noted it: run creates it
            try:
                mac.write_key(f)
            except FileExistsError:
                pass
            except OSError as e:
                raise DaemonError(keys.redact(f"cannot create probe key file {f}: "
                                              f"{e.strerror}")) from None
            else:
                log.warning("created probe key file %s (mode 0600): copy it to the responders "
                            "(argoctl responder --key-file); until then udp probes fail",
                            keys.redact(f))
        return mac.read_key(f)

    def _adopt(self, m: maps.Maps) -> dict[int, list[maps.Path]]:
        """Path sets to program (the maps stage calls this with the pinned maps):
        what the maps already hold for a destination if it fits the config (a
        previous run's decision, or `up`'s first path set), else the first path
        set (config.first_weights). The engine starts from the adopted choice."""
        # The engine's start-up grace (first measurement of the default path)
        # counts from here, not from before a compile that takes seconds.
        self.engine = Engine.from_config(self.cfg, clock=self.clock)
        sets = {}
        for name, d in self.dests.items():
            cur = m.pathset(d.id)
            w = weights_of(self.cfg, d.paths, cur[1]) if cur else None
            first = d.first_weights()
            self.adopted[name] = w is not None
            if w is None:
                w = first
            elif w != first:    # (the first set: the engine holds it already)
                self.engine.seed_choice(name, choice_of(d.paths, w))
            self.written[name] = w
            sets[d.id] = pathset(self.cfg, d.paths, w)
        return sets

    # -- running ----------------------------------------------------------------

    async def serve(self, stop: Optional[asyncio.Event] = None) -> None:
        """Run until `stop` is set (or cancelled). Call in the node's namespace."""
        from argoctl.probe import ProbeScheduler
        self._loop = asyncio.get_running_loop()
        self._stop = stop or asyncio.Event()
        self.sched = ProbeScheduler.from_config(
            self.cfg, self._on_result, key=self.opts.key, in_doubt=self._in_doubt,
            fast_divisor=self.opts.fast_divisor,
            # compiled udp streams feed the compiled estimators without Python
            sink=self.engine.native_sink, on_change=self._on_change,
            sources=self.probe_sources,
            # the compiled udp path reads CLOCK_MONOTONIC itself: same clock, in ns
            clock=time.monotonic_ns if self.clock is time.monotonic
            else lambda: int(self.clock() * 1e9))
        self._start_metrics()
        self.sched.start()
        if self.opts.apply_config:     # it watches what it applied (watch.py)
            self.watch = watch.Watch(self).start(self._loop)
        if self.fleet is not None:
            self.fleet.attach(self.sched)
            await self.fleet.start()
        if self.opts.freeze_heap:
            gc.collect()
            gc.freeze()
        self.ready.set()
        # READY=1 after setup with the loop running; the loop pings the watchdog.
        service.notify("READY=1", f"STATUS=steering {len(self.dests)} destination(s)")
        watchdog = service.Watchdog()
        next_round = next_look = self._loop.time()
        fast = self.interval / self.opts.fast_divisor
        try:
            while not self._stop.is_set():
                watchdog.ping()
                t = self._loop.time()
                early = self.fleet is not None and t >= next_look    # rates.Evidence.look
                if early:
                    next_look = t + self.fleet.look_s
                    early = self.fleet.handshakes_unanswered(
                        lambda p: self.passive.syns(self.maps, p))
                if t >= next_round or early:
                    self._round()
                    next_round = t + self.interval if early else next_round + self.interval
                    if next_round < t:           # we fell behind: do not burst
                        next_round = t + self.interval
                elif self._fast_decisions():
                    self._decide_some(set(self._doubt))
                self._on_deadlines()
                self._maybe_write_state()
                wait = min(next_round, t + fast) if self._fast_decisions() else next_round
                wait = min(wait, next_look) if self.fleet is not None else wait
                if self._deadline is not None:   # (in the loop's time)
                    wait = min(wait, t + self._deadline - self.clock())
                if watchdog.interval is not None:     # a long probe interval still pings
                    wait = min(wait, t + watchdog.interval / 2)
                try:
                    await asyncio.wait_for(self._stop.wait(), max(0.0, wait - self._loop.time()))
                except asyncio.TimeoutError:
                    pass
        finally:
            if self.watch is not None:
                self.watch.stop()
            if self.fleet is not None:
                await self.fleet.stop()
            self.sched.stop()
            if self._pending_handle is not None:
                self._pending_handle.cancel()
            self._write_state(running=False)

    def _in_doubt(self, dest: str, path: str) -> bool:
        """The prober's question: probe this path faster? (within the budget)"""
        if dest[0] == "@":       # fleet mode's tunnel legs: never faster
            return False
        return self._doubt_paths <= self.fast_budget[0] and self.engine.in_doubt(dest, path)

    def _fast_decisions(self) -> bool:
        return bool(self._doubt) and len(self._doubt) <= self.fast_budget[1]

    def _on_result(self, dest: str, path: str, seq: int, sent_ns: int,
                   rtt: Optional[float], now_ns: int) -> None:
        # (counted by the prober; compiled udp results skip this: their channel feeds the state)
        if dest[0] == "@":       # fleet mode's tunnel legs
            self.fleet.on_peer_result(path, seq, sent_ns, rtt, now_ns)
            return
        if self.engine.probe_result(dest, path, seq, sent_ns, rtt, now_ns):
            self._on_change(dest, path)

    def _on_change(self, dest: str, path: str) -> None:
        # A state change decides its destinations now, not at the next round.
        self._pending.update(self.engine.sharers(dest, path))
        if self._pending_handle is None:
            self._pending_handle = self._loop.call_soon(self._decide_pending)

    def probe_results(self, dest: str, path: str) -> dict[str, int]:
        """{"ok": replies, "timeout": losses} of the stream measuring (dest, path)."""
        p = self.sched.probers.get((dest, path)) if self.sched is not None else None
        return {"ok": p.received, "timeout": p.lost} if p is not None else {"ok": 0, "timeout": 0}

    def _decide_pending(self) -> None:
        self._pending_handle = None
        dests, self._pending = self._pending, set()
        self._decide_some(dests)
        self._deadline = self.engine.due(self.clock())[1]   # (a recovered path has one again)

    def _on_deadlines(self) -> None:
        """Decide at a detection time (silence since the last reply), not the next
        round; replies already queued first (BFD reads before its timers fire)."""
        if self._deadline is not None and self.clock() >= self._deadline:
            self.sched.drain()
            self._decide_some(self.engine.due(self.clock())[0])
            self._deadline = self.engine.due(self.clock())[1]

    def _decide_some(self, dests) -> None:
        now = self.clock()
        decisions = {d: self.engine.decide_one(d, now) for d in dests}
        doubt = self._doubted(decisions)
        self._retime(decisions, doubt)
        self._apply(decisions, doubt)

    def _doubted(self, decisions: dict[str, Decision]) -> set[tuple[str, str]]:
        """The (dest, path)s these decisions found not up (and that are probed:
        in fleet mode a path scored from the bus is not in doubt here)."""
        probed = self.fleet.probed if self.fleet is not None else None
        return {(n, p) for n, dec in decisions.items() for p, s in dec.scores.items()
                if s.state is not State.UP and (probed is None or (n, p) in probed)}

    def _retime(self, decisions: dict[str, Decision], doubt: set[tuple[str, str]]) -> None:
        """Tell the prober which streams' doubt may have changed: every path not
        up now (`doubt`) or at the previous look (the compiled udp streams keep
        their interval until told; Python streams ask at every probe)."""
        before = {pair for pair in self._retimed if pair[0] in decisions}
        self._retimed = (self._retimed - before) | doubt
        if doubt or before:
            self.sched.retime(doubt | before)

    def _round(self) -> None:
        self.rounds += 1
        self.sched.drain()                  # (as _on_deadlines)
        now = self.clock()
        self._poll_passive(now)
        decisions = self.engine.decide(now)
        self._deadline = self.engine.due(now)[1]
        doubt = self._doubted(decisions)
        self._doubt_paths = len(doubt)      # (the fast-probing budget _retime applies)
        self._retime(decisions, doubt)
        self._apply(decisions, doubt)
        if self.fleet is not None:
            for ev in self.fleet.round(decisions, now):
                log.info(json.dumps(ev))
                self._state_dirty = True

    def _poll_passive(self, now: float) -> None:
        self.passive.poll(self.maps, self.engine, self.fleet, now, self.opts.cgroup is None)

    def _apply(self, decisions: dict[str, Decision], doubt: set[tuple[str, str]]) -> None:
        """Write decisions whose weights differ from the maps (one batch), log them.
        `doubt`: their (dest, path)s not up (_doubted)."""
        sets = {}
        changed = []
        doubted = {n for n, _ in doubt}
        for name, dec in decisions.items():
            d = self.dests[name]
            if name in doubted:
                self._doubt.add(name)
            else:
                self._doubt.discard(name)
            if dec.weights == self.written.get(name):
                continue
            sets[d.id] = pathset(self.cfg, d.paths, dec.weights)
            changed.append(dec)
        if not sets:
            return
        try:
            self.maps.set_pathsets(sets)
        except OSError as e:
            # Nothing recorded as written: the next round tries again.
            log.error(json.dumps({"event": "map_write_failed", "error": str(e),
                                  "destinations": sorted(dec.dest for dec in changed)}))
            return
        self.map_writes += 1
        self._state_dirty = True
        for dec in changed:
            prev_w = self.written.get(dec.dest)
            prev = choice_of(self.dests[dec.dest].paths, prev_w) if prev_w else None
            self.written[dec.dest] = dec.weights
            if prev != dec.choice:
                self.switches[dec.dest] += 1
                self.chosen_since[dec.dest] = dec.at
            rec = Record(dec.at, dec.dest, dec.choice, prev, dec.weights, dec.reason,
                         {p: s.tier_name for p, s in dec.scores.items()})
            self.history.append(rec)
            log.info(json.dumps(rec.to_dict(), sort_keys=False))

    # -- outputs ------------------------------------------------------------------

    def choices(self) -> dict[str, str]:
        """dest -> the path taking new flows, as written to the maps."""
        return {n: choice_of(self.dests[n].paths, w) for n, w in self.written.items()}

    def state_doc(self, running: bool = True) -> dict:
        offset = time.time() - self.clock()
        dests = {}
        for name, d in self.dests.items():
            dec = self.engine.last(name)
            entry = {"id": d.id, "prefixes": self._prefixes[name],
                     "switches": self.switches[name],
                     "written": {p: [w, up] for p, (w, up) in self.written[name].items()}}
            if dec is not None:
                entry.update(decision_doc(dec, offset, self.chosen_since.get(name)))
            else:
                entry.update(choice=choice_of(d.paths, self.written[name]),
                             reason="adopted from the running datapath" if self.adopted.get(name)
                             else "no decision yet", paths={})
            dests[name] = entry
        doc = {"version": STATE_VERSION, "pid": os.getpid(), "running": running,
               "node": self.cfg.node.name, "config": self.cfg.path,
               "started": round(self.started_wall, 3), "updated": round(time.time(), 3),
               "probe_interval_ms": self.cfg.policy.probe_interval_ms,
               "reroute": self.cfg.policy.reroute, "destinations": dests}
        if self.fleet is not None:
            doc["fleet"] = self.fleet.status_doc(self.clock())
        return doc

    def state_text(self, running: bool = True) -> str:
        """state_doc() as the JSON text write_state would make of it (built
        directly: see _path_json)."""
        offset = time.time() - self.clock()
        static = self._state_static
        if static is None:
            # per destination, in name order: what never changes while we run
            static = self._state_static = [
                (name, _JSTR(name), self.dests[name].id, _json(self._prefixes[name]),
                 {p: _JSTR(p) for p in self.dests[name].paths})
                for name in sorted(self.dests)]
        last, written, switches = self.engine.last, self.written, self.switches
        out = []
        for name, jname, did, prefixes, jpaths in static:
            dec = last(name)
            w = written[name]
            wtext = _written_json(w, jpaths)
            if dec is None:
                reason = ("adopted from the running datapath" if self.adopted.get(name)
                          else "no decision yet")
                out.append('%s:{"choice":%s,"id":%r,"paths":{},"prefixes":%s,"reason":%s,'
                           '"switches":%r,"written":%s}'
                           % (jname, _JSTR(choice_of(self.dests[name].paths, w)), did, prefixes,
                              _JSTR(reason), switches[name], wtext))
                continue
            at, scores, weights = dec.at, dec.scores, dec.weights
            paths = ",".join(["%s:%s" % (jpaths.get(p) or _JSTR(p),
                                         _path_json(scores[p], *weights[p], at))
                              for p in sorted(scores)])
            since = self.chosen_since.get(name)
            out.append('%s:{"choice":%s,"decided_at":%r,"id":%r,"paths":{%s},"prefixes":%s,'
                       '"reason":%s,"since":%s,"switches":%r,"written":%s}'
                       % (jname, _JSTR(dec.choice), round(at + offset, 3), did, paths, prefixes,
                          _JSTR(dec.reason),
                          "null" if since is None else repr(round(since + offset, 3)),
                          switches[name], wtext))
        fleet = ("" if self.fleet is None
                 else ',"fleet":' + _json(self.fleet.status_doc(self.clock())))
        return ('{"config":%s,"destinations":{%s}%s,"node":%s,"pid":%s,"probe_interval_ms":%s,'
                '"reroute":%s,"running":%s,"started":%s,"updated":%s,"version":%s}'
                % (_json(self.cfg.path), ",".join(out), fleet, _json(self.cfg.node.name),
                   _json(os.getpid()), _json(self.cfg.policy.probe_interval_ms),
                   _json(self.cfg.policy.reroute), _json(running),
                   _json(round(self.started_wall, 3)), _json(round(time.time(), 3)),
                   _json(STATE_VERSION)))

    def _maybe_write_state(self) -> None:
        now = self.clock()
        if self._state_dirty or now - self._state_written_at >= STATE_REFRESH_S:
            self._write_state()

    def _write_state(self, running: bool = True) -> None:
        try:
            write_state_text(self.state_file, self.state_text(running))
        except OSError as e:   # a full /run must not stop the routing
            log.warning("cannot write %s: %s", self.state_file, e)
        self._state_written_at = self.clock()
        self._state_dirty = False

    def _start_metrics(self) -> None:
        listen = (self.cfg.policy.metrics_listen if self.opts.metrics_listen is None
                  else self.opts.metrics_listen)
        if not listen:
            return
        from argoctl import metrics
        self.exporter = metrics.Exporter(self)
        self.exporter.serve(listen)

    # -- lifecycle helpers ----------------------------------------------------------

    def start_thread(self, timeout: float = 120) -> "Daemon":
        """setup() here, then serve() in a thread inside the node's namespace.
        For tests and benches: one process, many daemons."""
        self.setup()
        return self.serve_thread(timeout)

    def serve_thread(self, timeout: float = 120) -> "Daemon":
        """serve() in a thread, for a daemon already set up (or reloaded into)."""
        self.ready.clear()

        def body():
            try:
                with netlink.netns(self.opts.ns):
                    self._stop = asyncio.Event()
                    asyncio.run(self.serve(self._stop))
            except BaseException as e:   # surfaced by stop()
                self._thread_error = e
                log.exception("daemon loop crashed")
                self.ready.set()
        self._thread = threading.Thread(target=body, name=f"argoctl-{self.cfg.node.name}",
                                        daemon=True)
        self._thread.start()
        if not self.ready.wait(timeout):
            raise DaemonError("daemon loop did not start")
        if self._thread_error is not None:
            self.stop()
        return self

    def stop(self, timeout: float = 30) -> None:
        """Stop a start_thread() daemon; leaves the datapath unless opts.cleanup."""
        self.stop_serving(timeout)
        self.close()
        if self._thread_error is not None:
            err, self._thread_error = self._thread_error, None
            raise DaemonError(f"daemon loop failed: {err!r}") from err

    def stop_serving(self, timeout: float = 30) -> None:
        """End a serve_thread() loop; the daemon stays set up (reload.reload next)."""
        if self._thread is not None:
            if self._loop is not None and self._stop is not None and not self._loop.is_closed():
                try:
                    self._loop.call_soon_threadsafe(self._stop.set)
                except RuntimeError:
                    pass
            self._thread.join(timeout)
            self._thread = None

    def release_handles(self) -> None:
        """Close the metrics server and the maps (a reload's successor reopens them)."""
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None
        if self.maps is not None:
            self.maps.close()
            self.maps = None

    def close(self) -> None:
        """Release what this process holds; with opts.cleanup also remove the
        datapath and everything `up` made."""
        self.release_handles()
        try:
            if self.opts.cleanup and self.lock.fd is not None:
                self.teardown()
        finally:
            self.lock.release()

    def teardown(self) -> None:
        from argoctl import apply
        apply.down(self.cfg.routing, ns=self.opts.ns, run_dir=self.run_dir,
                   cgroup=self.opts.cgroup, lock=False)
        try:
            os.unlink(self.state_file)
        except FileNotFoundError:
            pass
        log.info(json.dumps({"event": "cleanup", "node": self.cfg.node.name}))
