"""`argoctl bench fleet`: fleet mode on and off in the same run, at the decision level.

N agents (real Config, Engine and FleetAgent each, with a real Bus to a real
nats-server on loopback: argoctl/lab/nats.py) run in one event loop. What is
simulated is the network: every probe the agent's plan asks for is answered
from a latency model instead of being sent (so the numbers say what the plan
and the engine do, not what a kernel does):

  host i -> origin d:   rtt(i, d), 10-80 ms (seeded), or no reply when broken
  host i -> relay j:    rtt(i, j), 5-40 ms (the tunnel leg)
  via relay j:          rtt(i, j) + rtt(j, d) + 1 ms, +-5 % noise per probe

Host i peers with the next `paths - 1` hosts (ring), so every host has `paths`
paths (direct + relays) to each origin.

Real traffic, as the datapath would count it: every host opens FLOWS TCP
connections per destination per interval on the path it chose (the maps send
new flows there), and the model answers their SYNs with SYN-ACKs when that path
really reaches the origin. The counts are summed per path, as the datapath's
per-path counters are (a path carrying traffic to a dead and a live origin
shows SYNs unanswered), and fed to the engine's passive input and the fleet
agent's demand-mode evidence (argoctl/fleet/rates.py), in both modes. This is
what makes demand mode possible here: a chosen path carrying no traffic has no
passive evidence, and is probed at the full rate.

Each stream is probed every `pace` rounds as the fleet agent sets it (every
round with fleet off), and at once when its pace falls (the prober's poll).
Phases, each with fleet off (every path probed, no bus) and on:

  steady:  `warmup` seconds to converge (not counted), then `seconds` of
           probing; probes per origin and per host per second, and the true
           RTT of every (host, origin)'s final choice; run again at a larger
           fleet (`larger`: hosts x paths) to show how the factors grow;
  orpheus: (fleet on) origin 0 becomes reachable only from one relay host R
           (every other host's direct leg and every other relay's leg to it
           break): seconds until every host that peers with R chooses R for it.

regret_pct compares the median true RTT of the choices with fleet mode on
against full end-to-end probing (off), same latency model.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from typing import Optional

import click

from argoctl.bench.fleetlab import pace_counts
from argoctl.bench.report import emit

ORIGIN_NET = "203.0.113"
FLOWS = 2          # new TCP connections per (host, destination) per probe interval


def ttl_s(interval_ms: int) -> float:
    """The default TTL (15 s) at 1 s probes, scaled with the interval."""
    return max(3.0, 15 * interval_ms / 1000)


def _configs(directory: str, hosts: list[str], paths: int, dests: int, urls: list[str],
             creds: dict, interval_ms: int, k: int) -> dict:
    from argoctl import config
    out = {}
    n = len(hosts)
    for i, h in enumerate(hosts):
        peers = [hosts[(i + j) % n] for j in range(1, paths)]
        text = [f'[node]\nname = "{h}"\naddress = "192.0.2.{i + 1}"\n'
                f'tunnel_address = "198.51.100.{i + 1}"\n']
        for j, p in enumerate(peers):
            pi = hosts.index(p)
            text.append(f'\n[[peer]]\nname = "{p}"\naddress = "192.0.2.{pi + 1}"\n'
                        f'tunnel = "gre"\ntunnel_address = "198.51.100.{pi + 1}"\nid = {j + 1}\n')
        for d in range(dests):
            text.append(f'\n[[destination]]\nname = "o{d}"\nprefixes = ["{ORIGIN_NET}.{d}/32"]\n'
                        f'paths = {["direct", *peers]!r}\n'.replace("'", '"')
                        + f'probe = {{ kind = "icmp", target = "{ORIGIN_NET}.{d}" }}\n')
        text.append(f"\n[policy]\nprobe_interval_ms = {interval_ms}\nhold_down_s = 5.0\n")
        if urls:
            text.append(f'\n[fleet]\nservers = {urls!r}\n'.replace("'", '"')
                        + f'credentials_file = "{creds[h]}"\npublish_interval_ms = {interval_ms}\n'
                        f'ttl_s = {ttl_s(interval_ms):g}\nalternatives = {k}\n')
        path = os.path.join(directory, f"{h}{'-fleet' if urls else ''}.toml")
        with open(path, "w") as f:
            f.write("".join(text))
        out[h] = config.load(path)
    return out


class _Net:
    """The latency model (ms); broken legs answer nothing."""

    def __init__(self, hosts, dests, seed):
        rng = random.Random(seed)
        self.rng = random.Random(seed + 1)
        self.host = {(a, b): rng.uniform(5, 40) for a in hosts for b in hosts if a < b}
        self.origin = {(h, d): rng.uniform(10, 80) for h in hosts for d in range(dests)}
        self.broken: set = set()          # (host, dest) direct legs that answer nothing

    def hop(self, a, b):
        return self.host[(min(a, b), max(a, b))]

    def true_rtt(self, h, dest: int, path: str):
        if path == "direct":
            return None if (h, dest) in self.broken else self.origin[(h, dest)]
        if (path, dest) in self.broken:
            return None
        return self.hop(h, path) + self.origin[(path, dest)] + 1.0

    def sample(self, h, dest, path):
        r = self.true_rtt(h, dest, path)
        return None if r is None else r * (1 + self.rng.uniform(-0.05, 0.05))


class _Sim:
    def __init__(self, cfgs, net: _Net, fleet: bool):
        from argoctl.engine import Engine
        from argoctl.fleet.agent import FleetAgent
        self.net = net
        self.cfgs = cfgs
        self.engines = {h: Engine.from_config(c) for h, c in cfgs.items()}
        self.agents = {}
        if fleet:
            for h, c in cfgs.items():
                a = FleetAgent(c, self.engines[h])
                self.engines[h].overlay = a.overlay
                self.agents[h] = a
        self.probes_host = {h: 0 for h in cfgs}
        self.probes_origin: dict[int, int] = {}
        self.seq = 0
        pol = next(iter(cfgs.values())).policy
        self.timeout = pol.probe_timeout_ms / 1000
        self.interval = pol.probe_interval_ms / 1000
        self.lost: list = []        # (due, host, dest, path, seq): timeouts not yet due
        self.next_due: dict = {}    # (host, stream) -> when it is probed next
        self.last_pace: dict = {}   # (host, stream) -> its pace at its last probe
        self.syns = 0

    def due(self, key, pace: int, now: float) -> bool:
        """Is this stream probed this tick? Every `pace` ticks; at once when its
        pace just fell (the prober's poll) or it just started."""
        last = self.last_pace.get(key)
        if key in self.next_due and last is not None and pace >= last \
                and now < self.next_due[key]:
            return False
        self.next_due[key] = now + (pace - 0.5) * self.interval
        self.last_pace[key] = pace
        return True

    def passive(self, h: str, eng, agent, now: float) -> None:
        """Real TCP on each destination's chosen path (FLOWS new connections per
        destination per round): the datapath's per-path SYN and SYN-ACK counters,
        answered when the chosen path really reaches the origin."""
        syn: dict[str, int] = {}
        ack: dict[str, int] = {}
        for d in self.cfgs[h].destinations:
            dec = eng.last(d.name)
            if dec is None:
                continue
            p = dec.choice
            syn[p] = syn.get(p, 0) + FLOWS
            if self.net.true_rtt(h, int(d.name[1:]), p) is not None:
                ack[p] = ack.get(p, 0) + FLOWS
        for p, n in syn.items():
            self.syns += n
            eng.on_path_passive(p, n, ack.get(p, 0), (), now)
            if agent is not None:
                agent.on_passive(p, n, ack.get(p, 0), now)

    def probed(self, h):
        a = self.agents.get(h)
        if a is not None:
            return a.probed
        return {(d.name, p) for d in self.cfgs[h].destinations for p in d.paths}

    async def start(self):
        for a in self.agents.values():
            await a.start()

    async def stop(self):
        for a in self.agents.values():
            await a.stop()

    def expire(self, now: float) -> None:
        """Lost probes are known lost probe_timeout_ms after they were sent."""
        due = [x for x in self.lost if x[0] <= now]
        self.lost = [x for x in self.lost if x[0] > now]
        for _, h, dest, path, seq in due:
            if (dest, path) in self.probed(h):
                self.engines[h].path(dest, path).on_timeout(seq, now)

    def decide(self, now: float) -> dict:
        self.expire(now)
        return {h: eng.decide(now) for h, eng in self.engines.items()}

    def tick(self, now: float) -> dict:
        """One round per host, as the daemon's: the passive counters, the
        decisions, the fleet agent's plan and paces, then the probes due."""
        self.seq += 1
        self.expire(now)
        decisions = {}
        for h, eng in self.engines.items():
            a = self.agents.get(h)
            self.passive(h, eng, a, now)
            decs = eng.decide(now)
            decisions[h] = decs
            if a is not None:
                a.round(decs, now)
            for dest, path in self.probed(h):
                if not self.due((h, dest, path), a.pace_of(dest, path) if a else 1, now):
                    continue
                d = int(dest[1:])
                rtt = self.net.sample(h, d, path)
                est = eng.path(dest, path)
                if rtt is None:
                    self.lost.append((now + self.timeout, h, dest, path, self.seq))
                else:
                    est.on_reply(self.seq, now - rtt / 1000, rtt / 1000, now)
                self.probes_host[h] += 1
                self.probes_origin[d] = self.probes_origin.get(d, 0) + 1
            if a is not None:
                for peer in a.peers:           # tunnel legs (not to an origin)
                    if not self.due((h, "@", peer), a.peer_paces.get(peer, 1), now):
                        continue
                    rtt = self.net.hop(h, peer) / 1000
                    a.on_peer_result(peer, self.seq, int((now - rtt) * 1e9), rtt, int(now * 1e9))
                    self.probes_host[h] += 1
        return decisions

    def reset_counts(self) -> None:
        self.probes_host = {h: 0 for h in self.cfgs}
        self.probes_origin = {}


async def _run(sim: _Sim, seconds: float, interval: float, warmup: float = 0.0) -> tuple[dict, float]:
    """`warmup` seconds to converge (not counted), then `seconds` counted."""
    await sim.start()
    t0 = time.monotonic()
    decisions = {}
    warm = warmup <= 0
    try:
        while not warm or time.monotonic() - t0 < seconds:
            if not warm and time.monotonic() - t0 >= warmup:
                sim.reset_counts()
                t0, warm = time.monotonic(), True
            decisions = sim.tick(time.monotonic())
            await asyncio.sleep(interval)
    finally:
        await sim.stop()
    return decisions, time.monotonic() - t0


def _steady(hosts, paths, dests, seconds, interval_ms, k, seed, warmup, directory, nf) -> tuple:
    """Both modes' steady phase: probes per origin and host, choices' true RTTs."""
    interval = interval_ms / 1000
    creds = {h: nf.credentials(h) for h in hosts}
    off_cfg = _configs(directory, hosts, paths, dests, [], creds, interval_ms, k)
    on_cfg = _configs(directory, hosts, paths, dests, nf.urls, creds, interval_ms, k)
    out = {"hosts": len(hosts), "destinations": dests, "paths": paths}
    chosen = {}
    for mode, cfgs in (("off", off_cfg), ("on", on_cfg)):
        sim = _Sim(cfgs, _Net(hosts, dests, seed), fleet=mode == "on")
        decisions, took = asyncio.run(_run(sim, seconds, interval, warmup))
        out[f"probes_per_origin_s_{mode}"] = round(
            statistics.mean(sim.probes_origin.values()) / took, 2)
        out[f"probes_per_host_s_{mode}"] = round(
            statistics.mean(sim.probes_host.values()) / took, 2)
        chosen[mode] = [sim.net.true_rtt(h, int(d[1:]), dec.choice)
                        for h, decs in decisions.items() for d, dec in decs.items()]
        if mode == "on":
            ags = sim.agents.values()
            out["fleet_mode_hosts"] = sum(a.mode == "fleet" for a in ags)
            out["streams_on"] = pace_counts(ags)
            out["polls_on"] = sum(a.polls for a in ags)
    med = {m: statistics.median([r for r in v if r is not None] or [float("nan")])
           for m, v in chosen.items()}
    out["median_rtt_ms_off"], out["median_rtt_ms_on"] = round(med["off"], 2), round(med["on"], 2)
    out["regret_pct"] = round(100 * (med["on"] - med["off"]) / med["off"], 2)
    out["reduction_per_origin"] = round(out["probes_per_origin_s_off"]
                                        / out["probes_per_origin_s_on"], 2)
    out["reduction_per_host"] = round(out["probes_per_host_s_off"]
                                      / out["probes_per_host_s_on"], 2)
    return out, off_cfg, on_cfg


def run(hosts_n: int = 12, paths: int = 4, dests: int = 4, seconds: float = 20.0,
        interval_ms: int = 1000, alternatives: int = 2, seed: int = 1,
        warmup: float = 0.0, larger: Optional[tuple[int, int]] = None) -> dict:
    """The steady phase and Orpheus at hosts_n x paths; the steady phase again at
    `larger` (hosts, paths) to show how the reduction grows with the fleet."""
    from argoctl.lab.nats import NatsFleet
    hosts = [f"h{i:02d}" for i in range(hosts_n)]
    interval = interval_ms / 1000
    out = {"hosts": hosts_n, "destinations": dests, "paths": paths,
           "alternatives": alternatives, "probe_interval_ms": interval_ms,
           "probes": "simulated from a latency model (agents, engines and the bus are real)",
           "passive": f"{FLOWS} TCP handshakes per host, destination and interval on the "
                      "chosen path, answered when it reaches the origin (per-path counters)",
           "counted_s": seconds, "warmup_s": warmup}
    with tempfile.TemporaryDirectory(prefix="argoctl-bench-fleet-") as directory, \
            NatsFleet(hosts, ttl_s=ttl_s(interval_ms)) as nf:
        steady, off_cfg, on_cfg = _steady(hosts, paths, dests, seconds, interval_ms,
                                          alternatives, seed, warmup, directory, nf)
        out.update(steady)
        for mode, cfgs in (("off", off_cfg), ("on", on_cfg)):
            o = asyncio.run(_orpheus(cfgs, hosts, dests, seed, interval, mode == "on"))
            key = "orpheus_reach_s" + ("" if mode == "on" else "_off")
            out[key] = o["s"]
            out[f"orpheus_edges_moved_{mode}"] = o["moved"]
    if larger is not None:
        big = [f"h{i:02d}" for i in range(larger[0])]
        with tempfile.TemporaryDirectory(prefix="argoctl-bench-fleet-") as directory, \
                NatsFleet(big, ttl_s=ttl_s(interval_ms)) as nf:
            out["larger"], _, _ = _steady(big, larger[1], dests, seconds, interval_ms,
                                          alternatives, seed, warmup, directory, nf)
    return out


async def _orpheus(cfgs, hosts, dests, seed, interval, fleet: bool) -> dict:
    """Converge, then break every path to origin 0 but relay R's own leg, R being
    the relay fewest of its peers chose for it: seconds until every host peering
    with R chooses R (None: not within 30 s)."""
    net = _Net(hosts, dests, seed)
    sim = _Sim(cfgs, net, fleet=fleet)
    await sim.start()
    try:
        t0 = time.monotonic()
        decs = {}
        while time.monotonic() - t0 < 8 * interval + 3:
            decs = sim.tick(time.monotonic())
            await asyncio.sleep(interval)
        peers_of = {r: [h for h, c in cfgs.items() if any(p.name == r for p in c.peers)]
                    for r in hosts}
        relay = max(hosts, key=lambda r: sum(decs[h]["o0"].choice != r for h in peers_of[r]))
        edges = peers_of[relay]
        moving = sum(decs[h]["o0"].choice != relay for h in edges)
        for h in hosts:
            if h != relay:
                net.broken.add((h, 0))
        start = next_tick = time.monotonic()
        while time.monotonic() - start < 30:
            now = time.monotonic()
            if now >= next_tick:        # probes at the policy's rate ...
                decs = sim.tick(now)
                next_tick += interval
            else:                       # ... decisions in between (timeouts, detection)
                decs = sim.decide(now)
            if all(decs[h]["o0"].choice == relay for h in edges):
                return {"s": round(time.monotonic() - start, 2), "edges": len(edges),
                        "moved": moving}
            await asyncio.sleep(0.05)
        return {"s": None, "edges": len(edges), "moved": moving}
    finally:
        await sim.stop()


def _size(value: str) -> Optional[tuple[int, int]]:
    if value == "none":
        return None
    try:
        h, p = (int(x) for x in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: HOSTSxPATHS (e.g. 24x8) or none")
    if not (3 <= h <= 64 and 2 <= p <= min(8, h)):
        raise click.BadParameter(f"{value!r}: 3-64 hosts, 2-8 paths, paths <= hosts")
    return h, p


SIM_ONLY = ("hosts", "paths", "larger")
LAB_ONLY = ("edges", "relays", "tcp_rate", "warmup_off", "ttl_s")


@click.command("fleet")
@click.option("--lab/--sim", "lab", default=True, show_default=True,
              help="the 12-host namespace lab with real packets (argoctl/bench/fleetlab.py), "
                   "or the simulation: real agents and bus, probes answered from a latency "
                   "model (larger fleets, modelled latencies)")
@click.option("--edges", type=click.IntRange(1, 32), default=9, show_default=True,
              help="(lab) edges, each with a client")
@click.option("--relays", type=click.IntRange(1, 8), default=3, show_default=True,
              help="(lab) relays: each edge has relays + 1 paths")
@click.option("--tcp-rate", type=click.FloatRange(min=0), default=4.0, show_default=True,
              help="(lab) new TCP connections per second from each edge's client (as the "
                   "lab's tests)")
@click.option("--warmup-off", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="(lab) seconds after the restart without [fleet] before counting")
@click.option("--ttl-s", type=click.FloatRange(min=3), default=15.0, show_default=True,
              help="(lab) [fleet] ttl_s (the lab's tests use 5)")
@click.option("--hosts", type=click.IntRange(3, 64), default=12, show_default=True,
              help="(sim)")
@click.option("--paths", type=click.IntRange(2, 8), default=4, show_default=True, help="(sim)")
@click.option("--destinations", type=click.IntRange(1, 1000), default=4, show_default=True,
              help="origins every host reaches (lab: 1-4, served by the origin's host)")
@click.option("--seconds", type=click.FloatRange(min=5), default=20.0, show_default=True,
              help="counted seconds per mode (after --warmup)")
@click.option("--warmup", type=click.FloatRange(min=0), default=None,
              help="seconds to converge before counting [sim 12, lab: 15 after every "
                   "daemon is in fleet mode]")
@click.option("--alternatives", type=click.IntRange(0, 7), default=2, show_default=True,
              help="k: alternatives probed end to end (the lab's tests use 1)")
@click.option("--larger", default="24x8", show_default=True,
              help="(sim) a larger fleet HOSTSxPATHS whose steady phase is run too, or none")
@click.option("--json", "as_json", is_flag=True, help="(always JSON; accepted for symmetry)")
@click.pass_context
def bench_fleet(ctx, lab: bool, edges: int, relays: int, tcp_rate: float, warmup_off: float,
                ttl_s: float, hosts: int, paths: int, destinations: int, seconds: float,
                warmup: Optional[float], alternatives: int, larger: str,
                as_json: bool) -> None:
    """Fleet mode on and off in one run: probes per origin and per host, regret,
    Orpheus reach time. Default: the fleet lab, real daemons and real packets
    (root); --sim: the decision-level simulation."""
    from click.core import ParameterSource
    given = {n for n in (*SIM_ONLY, *LAB_ONLY)
             if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE}
    wrong = given & set(SIM_ONLY if lab else LAB_ONLY)
    if wrong:
        raise click.UsageError(f"--{sorted(wrong)[0].replace('_', '-')} is "
                               f"{'a --sim' if lab else 'a --lab'} option")
    if lab:
        from argoctl.bench import fleetlab
        from argoctl.lab.fleet import MAX_ORIGINS
        from argoctl.lab.topo import TopologyError
        if destinations > MAX_ORIGINS:
            raise click.UsageError(f"--destinations {destinations}: the lab's origin host "
                                   f"serves 1 to {MAX_ORIGINS}")
        try:
            out = fleetlab.run(edges, relays, seconds, 15.0 if warmup is None else warmup,
                               warmup_off, tcp_rate, alternatives, ttl_s, destinations,
                               say=lambda m: click.echo(f"bench fleet: {m}", err=True))
        except TopologyError as e:
            raise click.UsageError(str(e))
        emit({"bench": "fleet", **out})
        return
    big = _size(larger)
    if paths > hosts:
        raise click.BadParameter("at most as many paths as hosts", param_hint="--paths")
    emit({"bench": "fleet", "sim": True,
          **run(hosts, paths, destinations, seconds, 1000, alternatives,
                warmup=12.0 if warmup is None else warmup, larger=big)})
