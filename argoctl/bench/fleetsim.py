"""`argoctl bench fleetsim`: the fleet bus at internet scale, simulated.

H synthetic hosts with D destinations each publish their legs through ONE
nats-server on loopback, exactly as agents do (docs/fleet.md "Bus schema" and
"Rates"): values built by argoctl.fleet.schema's encoder, one NATS user per host
with the documented permissions (argoctl.lab.nats), per host and publish interval
one membership write, one tunnel-leg write and up to `max_writes_per_s` direct-leg
shards (oldest first). One agent ingests everything with the agent's own Bus and
FleetView (watch, decode, validate, store) and composes each leg it receives.

Measured per step: bus messages and bytes per second (the server's /varz), the
server's CPU and memory (/proc of its pid), the agent's CPU (getrusage) split
into ingest and composition, the publishers' CPU per leg. The largest complete
step (every put acknowledged, every value ingested; "held" when also at the
contract's rate) is extrapolated linearly to 300 hosts x 100k destinations
(`extrapolate`; docs/fleet.md "Scale").

Processes (fleetsim_roles.py): the bench, the server (not niced: it is measured),
the agent (not niced: measured), publisher and watcher processes (niced: load
generators). Every process is started here and stopped here, also on failure.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import urllib.request
from dataclasses import dataclass
from typing import Optional

import click

from argoctl.bench.fleetsim_roles import (AGENT, HOSTS_PER_PUBLISHER, INTERVAL_S, PEERS, TTL_S,
                                          WRITES_PER_S, PubSpec, agent_main, publisher_main,
                                          values_per_round, watcher_main, bad_values,
                                          host_name)
from argoctl.fleet.schema import LEGS_PER_MESSAGE, shard_count
from argoctl.lab.nats import NatsFleet, free_port

FULL_HOSTS, FULL_DESTS = 300, 100_000
STRETCH = 6.0             # a step gives up on rounds not begun by seconds x this
MAX_PUBLISHERS = 4        # publisher processes at most (300 hosts: 75 connections each)
IDLE_S = 3.0              # the server's idle CPU is measured this long before a step


# -- the server ------------------------------------------------------------------------

class SimServer(NatsFleet):
    """The lab's nats-server (users, permissions, buckets) plus its monitoring port
    on loopback, for /varz."""

    def __init__(self, hosts, **kw):
        super().__init__(hosts, size=1, **kw)
        self.http_port = free_port()

    def _config(self, i: int) -> str:
        path = super()._config(i)
        with open(path, "a") as f:
            f.write(f"http: 127.0.0.1:{self.http_port}\n")
        return path

    @property
    def pid(self) -> int:
        return self.procs[0].pid

    def varz(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/varz", timeout=5) as r:
            return json.load(r)


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_mem_kib(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


# -- one step --------------------------------------------------------------------------

@dataclass
class Step:
    hosts: int
    dests: int
    seconds: float
    watchers: int = 0          # extra watchers of the whole legs bucket (fan-out)
    bad: bool = True           # inject one value per rejection reason
    track: bool = False
    writes_per_s: int = WRITES_PER_S
    drain_s: float = 15.0      # how long the agent may take to catch up afterwards


class _Procs:
    """Child processes with a pipe each; all of them are ended by close()."""

    def __init__(self):
        self.ctx = multiprocessing.get_context("spawn")
        self.items = []

    def start(self, target, *args):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=target, args=(child, *args), daemon=True)
        p.start()
        child.close()
        self.items.append((p, parent))
        return p, parent

    @staticmethod
    def expect(p, pipe, what: str, timeout: float):
        if not pipe.poll(timeout):
            raise RuntimeError(f"{p.name}: no {what!r} within {timeout:.0f}s "
                               f"(exit code {p.exitcode})")
        msg = pipe.recv()
        if msg[0] == "error":
            raise RuntimeError(f"{p.name}: {msg[1]}")
        if msg[0] != what:
            raise RuntimeError(f"{p.name}: expected {what!r}, got {msg[0]!r}")
        return msg[1] if len(msg) > 1 else None

    def close(self):
        for p, pipe in self.items:
            if p.is_alive():
                p.terminate()
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
            pipe.close()
        self.items = []


def run_step(step: Step) -> dict:
    """One simulation run on a fresh server; returns its measurements."""
    hosts = [host_name(i) for i in range(step.hosts)]
    watchers = [f"w{i}" for i in range(step.watchers)]
    server = SimServer([*hosts, AGENT, *watchers], ttl_s=TTL_S)
    procs = _Procs()
    try:
        server.start()
        base_mem = proc_mem_kib(server.pid)
        pw = server.passwords
        agent, apipe = procs.start(agent_main, server.urls, pw[AGENT], server.members,
                                   server.legs, step.dests, TTL_S, step.track)
        pubs = []
        n_pub = min(MAX_PUBLISHERS, max(1, -(-step.hosts // HOSTS_PER_PUBLISHER)))
        for j in range(n_pub):
            mine = hosts[j::n_pub]
            spec = PubSpec(mine, list(range(step.hosts))[j::n_pub], step.hosts,
                           {h: pw[h] for h in mine}, server.urls, server.members, server.legs,
                           step.dests, step.writes_per_s, track=step.track)
            pubs.append(procs.start(publisher_main, spec))
        wpipe = None
        if watchers:
            _, wpipe = w = procs.start(watcher_main, watchers, {u: pw[u] for u in watchers},
                                       server.urls, server.legs)
        procs.expect(agent, apipe, "ready", 60)
        for p, pipe in pubs:
            procs.expect(p, pipe, "ready", 120)
        if wpipe is not None:
            procs.expect(w[0], wpipe, "ready", 60)

        # the server's own cost with everyone connected and nothing published
        c_idle, m_idle = proc_cpu_s(server.pid), time.monotonic()
        time.sleep(IDLE_S)
        idle = (proc_cpu_s(server.pid) - c_idle) / (time.monotonic() - m_idle)
        bad = {}
        t0 = time.time() + 1.0
        for _, pipe in pubs:
            pipe.send(("go", t0, step.seconds, t0 + step.seconds * STRETCH))
        time.sleep(max(0.0, t0 - time.time()))
        # the whole run is measured, from the first put to the agent having taken
        # in the last one: per message and per leg costs do not depend on how
        # late a busy machine made the publishers (rates are over the same span)
        apipe.send(("mark", None))
        a0 = procs.expect(agent, apipe, "mark", 30)
        v0, cpu0, m0 = server.varz(), proc_cpu_s(server.pid), time.monotonic()
        if step.bad:
            bad = bad_values(hosts, step.dests, time.time(), TTL_S)
            server.run(_admin_put(server, bad))
        rss_peak = 0
        pub = []
        deadline = time.monotonic() + step.seconds * STRETCH + 120
        for p, pipe in pubs:
            while not pipe.poll(0.5) and time.monotonic() < deadline:
                rss_peak = max(rss_peak, proc_mem_kib(server.pid)["VmRSS"])
            pub.append(procs.expect(p, pipe, "done", 1))
        tot = {k: sum(s[k] for s in pub) for k in ("puts", "legs_puts", "member_puts",
                                                     "direct_legs", "tunnel_legs", "bytes",
                                                     "errors", "rounds", "late_rounds",
                                                     "skipped_rounds",
                                                     "disconnects", "encode_cpu_s", "cpu_s",
                                                     "direct_bytes", "member_bytes",
                                                     "tunnel_puts")}
        span = max(s["last_put"] for s in pub) - t0
        want = (tot["legs_puts"] + len(bad), tot["member_puts"], step.drain_s)
        apipe.send(("finish", want))
        final = procs.expect(agent, apipe, "done", step.drain_s + 30)
        wgot = None
        if wpipe is not None:
            wpipe.send(("finish", want))
            wgot = procs.expect(w[0], wpipe, "done", step.drain_s + 30)
        v1, cpu1, m1 = server.varz(), proc_cpu_s(server.pid), time.monotonic()
        mem = proc_mem_kib(server.pid)
        win = m1 - m0
        shards = shard_count(step.dests, LEGS_PER_MESSAGE)
        per_host = 1 + values_per_round(shards, step.writes_per_s)
        rounds = round(step.seconds / INTERVAL_S)
        target = step.hosts * per_host * rounds
        a_cpu = final["cpu_s"] - a0["cpu_s"]
        a_win = final["t"] - a0["t"]
        legs_in = final["composed"] - a0["composed"]
        in_msgs = v1["in_msgs"] - v0["in_msgs"]
        r = {
            "hosts": step.hosts, "destinations": step.dests, "shards_per_host": shards,
            "legs_per_message": round(step.dests / shards, 1),
            "seconds": step.seconds, "span_s": round(span, 2), "measured_s": round(win, 2),
            "watchers": 1 + step.watchers,
            "target_puts": target, "puts": tot["puts"], "put_errors": tot["errors"],
            "disconnects": tot["disconnects"],
            "late_rounds_pct": round(100 * tot["late_rounds"] / max(1, tot["rounds"]), 1),
            "skipped_rounds": tot["skipped_rounds"],
            "target_puts_per_s": round(target / step.seconds, 1),
            "puts_per_s": round(tot["puts"] / max(span, step.seconds), 1),
            "mean_message_bytes": round(tot["bytes"] / max(1, tot["puts"])),
            "bytes_per_direct_leg": round(tot["direct_bytes"] / max(1, tot["direct_legs"]), 1),
            "member_message_bytes": round(tot["member_bytes"] / max(1, tot["member_puts"])),
            "tunnel_message_bytes": round((tot["bytes"] - tot["direct_bytes"]
                                           - tot["member_bytes"]) / max(1, tot["tunnel_puts"])),
            "bus_in_msgs_per_s": round(in_msgs / win, 1),
            "bus_in_bytes_per_s": round((v1["in_bytes"] - v0["in_bytes"]) / win),
            "bus_out_msgs_per_s": round((v1["out_msgs"] - v0["out_msgs"]) / win, 1),
            "bus_out_bytes_per_s": round((v1["out_bytes"] - v0["out_bytes"]) / win),
            "server_cpu_pct": round(100 * (cpu1 - cpu0) / win, 1),
            "server_idle_cpu_pct": round(100 * idle, 2),
            # per put, net of the idle cost over the same time (it does not scale with puts)
            "server_cpu_us_per_put": round(1e6 * max(0.0, cpu1 - cpu0 - idle * win)
                                           / max(1, tot["puts"]), 1),
            "server_rss_mib_start": round(base_mem["VmRSS"] / 1024, 1),
            "server_rss_mib": round(mem["VmRSS"] / 1024, 1),
            "server_rss_mib_peak": round(max(rss_peak, mem["VmHWM"]) / 1024, 1),
            "agent_cpu_pct": round(100 * a_cpu / a_win, 1),
            "agent_ingest_cpu_pct": round(100 * (final["ingest_cpu_s"] - a0["ingest_cpu_s"])
                                          / a_win, 1),
            "agent_compose_cpu_pct": round(100 * (final["compose_cpu_s"] - a0["compose_cpu_s"])
                                           / a_win, 1),
            "agent_legs_per_s": round(legs_in / a_win, 1),
            "agent_us_per_leg": round(1e6 * a_cpu / max(1, legs_in), 2),
            "agent_ingest_us_per_leg": round(1e6 * (final["ingest_cpu_s"] - a0["ingest_cpu_s"])
                                             / max(1, legs_in), 2),
            "agent_compose_us_per_leg": round(1e6 * (final["compose_cpu_s"]
                                                     - a0["compose_cpu_s"]) / max(1, legs_in), 2),
            "agent_values": final["legs_values"], "agent_member_values": final["member_values"],
            "agent_legs_composed": final["composed"], "agent_drain_s": final["drain_s"],
            "rejected": final["rejected"], "bad_injected": len(bad),
            "published_legs_values": tot["legs_puts"], "published_member_values":
                tot["member_puts"], "published_direct_legs": tot["direct_legs"],
            "publisher_cpu_pct_per_host": round(100 * tot["cpu_s"] / max(1, tot["rounds"])
                                                / INTERVAL_S, 2),
            "publisher_us_per_leg": round(1e6 * tot["encode_cpu_s"]
                                          / max(1, tot["direct_legs"] + tot["tunnel_legs"]), 2),
        }
        if wgot is not None:
            r["extra_watchers_values"] = wgot["values"]
        # complete: every put landed and the agent took in every value; held: and
        # at (nearly) the contract's rate, the agent at most a few seconds behind.
        # A machine busy with other work stretches the time of a complete step
        # (publishers run late) without changing its per message costs.
        r["complete"] = (tot["errors"] == 0 and tot["puts"] == target
                         and final["legs_values"] == tot["legs_puts"] + len(bad)
                         and final["member_values"] == tot["member_puts"])
        r["held"] = (r["complete"] and r["puts_per_s"] >= 0.9 * r["target_puts_per_s"]
                     and final["drain_s"] <= 5.0)
        # what two cores would hold if this were all they ran, from the CPU each
        # host costs: its publisher, its share of the server, the agent's ingest
        cpu_host = (tot["cpu_s"] / max(1, tot["rounds"]) / INTERVAL_S
                    + r["server_cpu_us_per_put"] / 1e6 * r["target_puts_per_s"] / step.hosts
                    + r["agent_us_per_leg"] / 1e6 * tot["direct_legs"]
                    / max(1, tot["rounds"]) / INTERVAL_S)
        r["cpu_s_per_host_s"] = round(cpu_host, 4)
        r["hosts_two_cores_hold"] = round(2.0 / cpu_host, 1)
        if step.track:
            r["published_last"] = {k: v for s in pub for k, v in s["last"].items()}
            r["agent_last"] = final["last"]
        return r
    finally:
        procs.close()
        server.stop()


async def _admin_put(server: NatsFleet, items: dict[str, bytes]) -> None:
    nc = await server.admin()
    try:
        kv = await nc.jetstream(timeout=10).key_value(server.legs)
        for k, v in items.items():
            await kv.put(k, v)
    finally:
        await nc.close()


# -- extrapolation -------------------------------------------------------------------

def extrapolate(base: dict, pair: Optional[tuple] = None, hosts: int = FULL_HOSTS,
                dests: int = FULL_DESTS, peers: int = PEERS) -> dict:
    """Linear model from a measured step to `hosts` x `dests` (docs/fleet.md "Scale").

    Every host publishes per interval its membership and min(shards + 1,
    max_writes_per_s) legs values, its shards (dests/shards legs each) and its
    tunnel-leg value taking turns, oldest first; the bus's input is hosts x that.
    Per message (same size and mix as measured when
    the step had `dests` destinations) the server spends c_in, plus c_out per
    delivery to a watcher: server CPU = in x (c_in + c_out x f), f = watchers per
    message. c_out comes from `pair`, two steps at one size with f = 1 and f > 1,
    c_in from base (without a pair: c_out = 0, the measured sum is c_in). An
    agent spends its measured CPU per leg on every leg it watches; a publisher its
    measured encoding CPU per leg. The server's memory grows by its measured
    growth per host (an upper bound: part of it is caches that do not grow)."""
    shards = shard_count(dests, LEGS_PER_MESSAGE)
    values = values_per_round(shards, WRITES_PER_S)    # legs values per host and interval
    shard_writes = values * shards / (shards + 1)      # the rest: its tunnel-leg value
    in_msgs = hosts * (1 + values) / INTERVAL_S
    scale = in_msgs / max(1e-9, base["target_puts_per_s"])
    # a message's size follows its legs (the same as measured when measured at `dests`)
    size = (shard_writes * dests / shards * base["bytes_per_direct_leg"]
            + (values - shard_writes) * base["tunnel_message_bytes"]
            + base["member_message_bytes"]) / (1 + values)
    c_in, c_out, fit = base["server_cpu_us_per_put"] / 1e6, 0.0, "not measured"
    if pair is not None and pair[1]["watchers"] > pair[0]["watchers"]:
        ref, fan = pair
        c_out = (fan["server_cpu_us_per_put"] - ref["server_cpu_us_per_put"]) / 1e6 \
            / (fan["watchers"] - ref["watchers"])
        c_in = base["server_cpu_us_per_put"] / 1e6 - c_out * base["watchers"]
        fit = "ok"
        if c_out < 0 or c_in < 0:       # noise larger than the effect: say so, keep the sum
            fit = "noisy: per-put cost used for every watcher"
            c_in, c_out = 0.0, base["server_cpu_us_per_put"] / 1e6 / base["watchers"]
    legs_per_host_s = shard_writes * dests / shards / INTERVAL_S

    def case(f: float, legs_watched_s: float) -> dict:
        return {"watchers_per_message": f,
                "bus_out_msgs_per_s": round(in_msgs * f),
                "bus_out_bytes_per_s": round(in_msgs * f * size),
                "server_cores": round(in_msgs * (c_in + c_out * f), 2),
                "agent_legs_per_s": round(legs_watched_s),
                "agent_cores": round(legs_watched_s * base["agent_us_per_leg"] / 1e6, 2)}

    rss0 = base["server_rss_mib_start"]
    return {
        "hosts": hosts, "destinations": dests, "shards_per_host": shards,
        "from_hosts": base["hosts"], "from_destinations": base["destinations"],
        "scale": round(scale, 1),
        "bus_in_msgs_per_s": round(in_msgs),
        "mean_message_bytes": round(size),
        "bus_in_bytes_per_s": round(in_msgs * size),
        "server_cpu_us_per_put": round(c_in * 1e6, 1),
        "server_cpu_us_per_delivery": round(c_out * 1e6, 1), "fanout_fit": fit,
        "server_rss_gib": round((rss0 + (base["server_rss_mib"] - rss0) * scale) / 1024, 2),
        "store_gib": round(hosts * (shards + 2) * size / 2**30, 2),
        "leg_refresh_s": round((shards + 1) / values * INTERVAL_S, 2),
        "publisher_encode_cpu_pct_per_host": round(
            base["publisher_us_per_leg"] * legs_per_host_s / 1e4, 1),
        "watch_all": case(hosts, hosts * legs_per_host_s),
        "watch_peers": case(peers, peers * legs_per_host_s),
    }


def simulate(host_steps: list[int], dests: int, seconds: float, watchers: int,
             progress=None) -> dict:
    """Ramp the hosts while every step completes (all published, all ingested),
    then repeat the smallest step with extra watchers (the fan-out's cost, where
    the machine has the most room); the measurements and the extrapolation from
    the largest complete step."""
    steps = []
    load0 = os.getloadavg()[0]
    for h in host_steps:
        r = run_step(Step(h, dests, seconds))
        steps.append(r)
        if progress:
            progress(r)
        if not r["complete"]:
            break
    done = [r for r in steps if r["complete"]]
    held = [r for r in steps if r["held"]]
    base = done[-1] if done else None
    fan = None
    if done and watchers > 0:
        fan = run_step(Step(done[0]["hosts"], dests, seconds, watchers=watchers))
        if progress:
            progress(fan)

    def frac(r):
        return None if r is None else {
            "hosts": r["hosts"], "destinations": dests,
            "fraction_of_full": round(r["hosts"] * dests / (FULL_HOSTS * FULL_DESTS), 4),
            "scaled": "hosts" if dests == FULL_DESTS else "hosts and destinations",
            "realtime": r["held"], "rate_pct": round(100 * r["puts_per_s"]
                                                     / r["target_puts_per_s"], 1)}
    pair = (done[0], fan) if fan is not None and fan["complete"] else None
    # others' load on a shared machine starves the (niced) publishers: say how busy
    return {"bench": "fleetsim", "destinations": dests, "steps": steps, "fanout": fan,
            "loadavg_1m": [round(load0, 1), round(os.getloadavg()[0], 1)], "cpus": os.cpu_count(),
            "largest_complete": frac(base), "largest_held": frac(held[-1] if held else None),
            "full": None if base is None else extrapolate(base, pair)}


@click.command("fleetsim")
@click.option("--hosts", "hosts_spec", default="1,2,4", show_default=True,
              help="host counts to ramp through (stops at the first that does not complete)")
@click.option("--destinations", type=click.IntRange(min=1), default=FULL_DESTS,
              show_default=True)
@click.option("--seconds", type=click.FloatRange(min=2, max=120), default=8,
              show_default=True, help="measured window per step")
@click.option("--watchers", type=click.IntRange(min=0, max=16), default=3, show_default=True,
              help="extra watchers for the fan-out step (0: none)")
@click.option("--json", "as_json", is_flag=True, help="(always JSON; for symmetry)")
def bench_fleetsim(hosts_spec: str, destinations: int, seconds: float, watchers: int,
                   as_json: bool) -> None:
    """The fleet bus at H hosts x D destinations through one nats-server on
    loopback, extrapolated to 300 x 100k (needs nats-server)."""
    import sys

    from argoctl.bench.report import emit

    try:
        steps = [int(x) for x in hosts_spec.split(",") if x.strip()]
        if not steps or min(steps) < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter("a comma-separated list of host counts >= 1",
                                 param_hint="--hosts") from None

    def progress(r):
        print(f"fleetsim: {r['hosts']} hosts x {r['destinations']} destinations, "
              f"{r['watchers']} watcher(s): {r['puts_per_s']} puts/s, server "
              f"{r['server_cpu_pct']}%, agent {r['agent_cpu_pct']}%, complete={r['complete']}, "
              f"held={r['held']}",
              file=sys.stderr, flush=True)
    try:
        emit(simulate(steps, destinations, seconds, watchers, progress))
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
