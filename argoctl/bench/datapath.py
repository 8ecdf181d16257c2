"""`argoctl bench datapath`: what steering costs per packet, against the kernel.

Per prefix count (1k, 100k, 1M; 8 paths per destination), BPF_PROG_TEST_RUN
with >= 1,000,000 repeats of one TCP packet through
- `bench_empty`: a tc program that returns at once (the floor);
- `bench_fib`: parses the same headers and makes one bpf_fib_lookup against a
  routing table holding the same prefixes, in a namespace of its own;
- `steer` (flow pinned: the steady state of an established flow) and
  `steer_lpm` (a trie walk on every packet: the cost a new flow pays).
Overheads are `x - empty`. Also: the time to program 100,000 destinations
through the map writer, and (`--throughput`, needs tunnels: the VM) TCP
throughput through a GRE tunnel with the program attached vs detached.

Prefixes are IPv6 inside 2001:db8::/32 (documentation space; IPv4
documentation ranges cannot hold a million prefixes)."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import click

from argoctl import bpfsys, datapath, maps, names

DOC6 = 0x20010DB8 << 96          # 2001:db8::/32
LENGTHS = ((40, 5), (48, 25), (56, 30), (64, 40))  # prefix length, % of prefixes
ROUTE_DEV = "to-peer"
# Bench-only BPF programs live with the benchmarks, apart from the datapath's own.
BENCH_BPF_DIR = Path(__file__).resolve().parent / "bpf"


def gen_prefixes(n: int, seed: int = 1) -> list[tuple[int, int]]:
    """n distinct (network int, length) IPv6 prefixes inside 2001:db8::/32."""
    rng = random.Random(seed)
    lens = [l for l, pct in LENGTHS for _ in range(pct)]
    seen: set[tuple[int, int]] = set()
    out = []
    while len(out) < n:
        plen = rng.choice(lens)
        net = DOC6 | (rng.getrandbits(plen - 32) << (128 - plen))
        if (net, plen) not in seen:
            seen.add((net, plen))
            out.append((net, plen))
    return out


def _fmt6(net: int, plen: int) -> str:
    import ipaddress
    return f"{ipaddress.IPv6Address(net)}/{plen}"


def _tcp6_to(dst: int) -> bytes:
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    import ipaddress
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                 / IPv6(src="2001:db8:c::2", dst=str(ipaddress.IPv6Address(dst)))
                 / TCP(sport=40000, dport=443, flags="A"))


SKB_MARK_OFF, SKB_CB0_OFF = 8, 48   # offsets in struct __sk_buff


def _time_ns(prog_fd: int, pkt: bytes, repeat: int, rounds: int = 3,
             out_off: int = SKB_MARK_OFF) -> tuple[float, int]:
    """Median of `rounds` averages (ns/packet) and the result the program left
    (skb mark, or cb[0] for the benchmark build of the steering program)."""
    runs = []
    mark = 0
    ctx = bytes(SKB_CB0_OFF + 4)
    for _ in range(rounds):
        _, dur, _, ctx_out = bpfsys.test_run(prog_fd, pkt, repeat=repeat, ctx=ctx)
        runs.append(dur)
        mark = struct.unpack_from("<I", ctx_out, out_off)[0]
    return sorted(runs)[len(runs) // 2], mark


def eight_paths(dest_id: int) -> list[maps.Path]:
    return [maps.Path(path_id=i, mark=names.path_mark(i), weight=1 + (dest_id + i) % 4)
            for i in range(1, 9)]


def program_time(m: maps.Maps, count: int = 100_000) -> dict:
    """Seconds to program `count` destinations (one prefix and 8 paths each)
    through the public writer API, as `argoctl` would."""
    prefixes = [(_fmt6(n, l), i + 1) for i, (n, l) in enumerate(gen_prefixes(count, seed=7))]
    sets = {i + 1: eight_paths(i + 1) for i in range(count)}
    t0 = time.perf_counter()
    m.set_pathsets(sets)
    t1 = time.perf_counter()
    m.set_prefixes(prefixes)
    t2 = time.perf_counter()
    # Second pass: every destination rewritten (what a decision round over all costs).
    m.set_pathsets(sets)
    t3 = time.perf_counter()
    return {"bench": "datapath", "case": "program_destinations", "destinations": count,
            "paths": 8, "pathsets_s": round(t1 - t0, 3), "prefixes_s": round(t2 - t1, 3),
            "total_s": round(t2 - t0, 3), "rewrite_pathsets_s": round(t3 - t2, 3),
            "pathset_batch": m._batch_ok.get("pathsets"), "lpm_batch": m._batch_ok.get("dst_v6"),
            "target_s": 2.0, "ok": (t2 - t0) <= 2.0}


def _add_routes(host, prefixes: list[tuple[int, int]], chunk: int = 100_000) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(prefixes), chunk):
        lines = "".join(f"route add {_fmt6(n, l)} dev {ROUTE_DEV}\n"
                        for n, l in prefixes[i:i + chunk])
        host.run(["ip", "-6", "-batch", "-"], input=lines, check=True, timeout=1800)
    return time.perf_counter() - t0


def _write_prefixes(m: maps.Maps, prefixes: list[tuple[int, int]], ndest: int) -> None:
    items = [(struct.pack("<I", l) + n.to_bytes(16, "big"), struct.pack("<I", i % ndest + 1))
             for i, (n, l) in enumerate(prefixes)]
    m._write_many("dst_v6", 20, 4, items)


def run(sizes=(1_000, 100_000, 1_000_000), repeat: int = 1_000_000,
        destinations: int = 100_000) -> Iterator[dict]:
    from argoctl.lab.topo import Topology

    top = max(sizes)
    # A private bpffs for the two builds' shared maps; unmounted at the end.
    mnt = tempfile.mkdtemp(prefix="argoctl-bench-bpffs-")
    pin_dir = os.path.join(mnt, "pins")
    built = []
    sz = datapath.Sizes(max_dests=destinations + 1024, max_prefixes_v4=1024,
                        max_prefixes_v6=top + 1024, max_flows=65536)
    try:
        # Two builds of the steering program sharing one set of maps (pinned).
        steer = datapath.compile_bpf(pin_dir, sz, entries=["steer_tc.c"],
                                     extra_cflags=["-DARGOCTL_BENCH"])
        steer_lpm = datapath.compile_bpf(pin_dir, sz, entries=["steer_tc.c"],
                                         extra_cflags=["-DARGOCTL_BENCH", "-DARGOCTL_ALWAYS_LPM"])
        base = datapath.compile_bpf(None, sz, entries=[BENCH_BPF_DIR / "bench_fib.c"])
        built += [steer, steer_lpm, base]
        fds = {
            "steer": datapath.load_programs(steer, ["steer_eth"])["steer_eth"],
            "steer_lpm": datapath.load_programs(steer_lpm, ["steer_eth"])["steer_eth"],
            **datapath.load_programs(base, ["bench_empty", "bench_fib"]),
        }
        m = maps.Maps(fds=datapath.map_fds(steer))
        m.write_settings(names.DEFAULT_FWMARK_MASK)

        yield program_time(m, destinations)
        # Destinations 1..N now hold 8-path sets; clear the measurement's prefixes.
        m.remove_prefixes([p for p in m.prefixes()])

        prefixes = gen_prefixes(top)
        with Topology(prefix=f"agb{os.getpid() % 100000}") as t:
            fib_host, peer = t.add_host("fib"), t.add_host("peer")
            t.add_link(fib_host, peer, subnet6="2001:db8:ffff::/64")
            t.start()
            loaded = 0
            for n in sorted(sizes):
                new = prefixes[loaded:n]
                route_s = _add_routes(fib_host, new)
                t0 = time.perf_counter()
                _write_prefixes(m, new, destinations)
                map_s = time.perf_counter() - t0
                loaded = n
                m.clear_flows()
                rng = random.Random(n)
                net, plen = prefixes[rng.randrange(n)]
                dst = net | rng.getrandbits(128 - plen)
                pkt = _tcp6_to(dst)
                empty, _ = _time_ns(fds["bench_empty"], pkt, repeat)
                with fib_host.inside():
                    fib, fib_mark = _time_ns(fds["bench_fib"], pkt, repeat)
                steer_ns, steer_mark = _time_ns(fds["steer"], pkt, repeat, out_off=SKB_CB0_OFF)
                lpm_ns, lpm_mark = _time_ns(fds["steer_lpm"], pkt, repeat, out_off=SKB_CB0_OFF)
                fib_over = fib - empty
                steer_over = steer_ns - empty
                lpm_over = lpm_ns - empty
                bound = 1.0 if n <= 100_000 else 1.5
                yield {
                    "bench": "datapath", "case": "per_packet", "prefixes": n, "paths": 8,
                    "family": "ipv6", "repeat": repeat,
                    "empty_ns": empty, "fib_ns": fib, "steer_ns": steer_ns, "steer_lpm_ns": lpm_ns,
                    "fib_overhead_ns": fib_over, "steer_overhead_ns": steer_over,
                    "steer_lpm_overhead_ns": lpm_over,
                    "steer_vs_fib": round(steer_over / fib_over, 3) if fib_over > 0 else None,
                    "steer_lpm_vs_fib": round(lpm_over / fib_over, 3) if fib_over > 0 else None,
                    "target_ratio": bound,
                    "ok": fib_over > 0 and lpm_over <= bound * fib_over,
                    # Sanity: the FIB found a route, steering chose a path.
                    "fib_found_route": fib_mark != 0, "steered": steer_mark != 0 and lpm_mark != 0,
                    "route_load_s": round(route_s, 2), "map_load_s": round(map_s, 2),
                }
    finally:
        for b in built:
            b.cleanup()
        shutil.rmtree(pin_dir, ignore_errors=True)
        subprocess.run(["umount", mnt], capture_output=True)
        os.rmdir(mnt)


def _iperf(src, dst_addr: str, seconds: int) -> float:
    # -O 1: the first second (slow start) is not counted
    out = src.run(["iperf3", "-c", dst_addr, "-t", str(seconds), "-O", "1", "-J"], check=True,
                  timeout=seconds + 60).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"]


def run_throughput(seconds: int = 3, rounds: int = 9) -> Iterator[dict]:
    """TCP throughput src -> edge -> GRE -> dst, the steering program attached on
    edge's ingress from src vs detached, alternating in one run. Both ways cross
    the same tunnel (main table routes into it; steering adds the mark and the
    fwmark rule lookup), so the ratio is the program's cost alone. The ratio is
    the median over rounds of attached / the detached run just before it: runs
    drift by several percent under TCG, neighbours much less."""
    import ipaddress
    from argoctl import config as C
    from argoctl.lab.topo import Topology

    pin_dir = f"/sys/fs/bpf/argoctl-bench-tp{os.getpid()}"
    mark = names.path_mark(1)
    with Topology(prefix=f"agtp{os.getpid() % 100000}") as t:
        src, edge, dst = t.add_host("src"), t.add_host("edge"), t.add_host("dst", loopback="203.0.113.10")
        t.add_link(edge, src, subnet="198.51.100.0/30")
        t.add_link(edge, dst, subnet="192.0.2.64/30")
        t.add_route(src, "default", via=edge, src=None)
        t.start()
        edge.run(["ip", "-batch", "-"], check=True, input=(
            "link add gre1 type gre local 192.0.2.65 remote 192.0.2.66\n"
            "link set gre1 up\n"
            "route add 203.0.113.10/32 dev gre1\n"
            "route add default dev gre1 table 7201\n"
            f"rule add fwmark {mark:#x}/{names.DEFAULT_FWMARK_MASK:#x} lookup 7201 priority 7201\n"))
        dst.run(["ip", "-batch", "-"], check=True, input=(
            "link add gre1 type gre local 192.0.2.66 remote 192.0.2.65\n"
            "link set gre1 up\n"
            "route add 198.51.100.0/30 dev gre1\n"))
        server = dst.popen(["iperf3", "-s", "-B", "203.0.113.10"], stdout=subprocess.DEVNULL)
        time.sleep(1)
        node = C.Node(name="edge", address=ipaddress.ip_address("192.0.2.65"),
                      tunnel_address=ipaddress.ip_address("198.51.100.201"),
                      steer_interfaces=(edge.ifname(src),))
        dest = C.Destination(name="dst", id=1, prefixes=(ipaddress.ip_network("203.0.113.0/24"),),
                             paths=("direct",))
        cfg = C.Config(path="<bench>", node=node, peers=(), destinations=(dest,))
        results = {"attached": [], "detached": []}
        try:
            datapath.attach(cfg, pin_dir=pin_dir, netns=edge.netns, cgroup=None)
            datapath.program(cfg, pin_dir=pin_dir, pathsets={1: [maps.Path(1, mark, 1)]})
            for _ in range(rounds):
                datapath.detach_filters(netns=edge.netns)
                results["detached"].append(_iperf(src, "203.0.113.10", seconds))
                datapath.attach(cfg, pin_dir=pin_dir, netns=edge.netns, cgroup=None)
                results["attached"].append(_iperf(src, "203.0.113.10", seconds))
            with maps.Maps(pin_dir) as m:
                steered = m.path_stats(1).packets
        finally:
            server.kill()
            datapath.detach(pin_dir=pin_dir, netns=edge.netns, cgroup=None)
    pairs = sorted(a / d for a, d in zip(results["attached"], results["detached"]) if d)
    ratio = pairs[len(pairs) // 2] if pairs else None
    yield {"bench": "datapath", "case": "tcp_throughput_gre", "seconds": seconds, "rounds": rounds,
           "kernel": os.uname().release, "attached_bps": [round(x) for x in results["attached"]],
           "detached_bps": [round(x) for x in results["detached"]],
           "pair_ratios": [round(r, 4) for r in pairs],
           "ratio": None if ratio is None else round(ratio, 4), "target_ratio": 0.98,
           "ok": ratio is not None and ratio >= 0.98, "steered_packets": steered}


@click.command("datapath")
@click.option("--json", "as_json", is_flag=True, help="JSON lines (the only output format).")
@click.option("--sizes", default="1000,100000,1000000", show_default=True,
              help="Prefix counts, comma separated.")
@click.option("--repeat", default=1_000_000, show_default=True, type=click.IntRange(1))
@click.option("--destinations", default=100_000, show_default=True, type=click.IntRange(1))
@click.option("--throughput", is_flag=True,
              help="Only TCP throughput through a GRE tunnel, program attached vs detached "
                   "(needs GRE: run in the VM).")
@click.option("--seconds", default=3, show_default=True, type=click.IntRange(1),
              help="Length of each throughput run (plus 1 s of slow start not counted).")
def bench_datapath(as_json, sizes, repeat, destinations, throughput, seconds):
    """Per-packet cost of steering vs an empty program and a FIB lookup."""
    from argoctl.bench.report import emit
    if throughput:
        for rec in run_throughput(seconds=seconds):
            emit(rec)
        return
    counts = tuple(int(s) for s in sizes.split(",") if s)
    for rec in run(counts, repeat, destinations):
        emit(rec)


@click.command("datapath-throughput")
@click.option("--json", "as_json", is_flag=True, help="JSON lines (the only output format).")
@click.option("--seconds", default=3, show_default=True, type=click.IntRange(1))
def bench_datapath_throughput(as_json, seconds):
    """TCP through a GRE tunnel, steering attached vs detached (needs GRE: the VM).
    Same as `bench datapath --throughput`; a name of its own so `make bench` can
    run it in the VM while `bench datapath` runs on the host."""
    from argoctl.bench.report import emit
    for rec in run_throughput(seconds=seconds):
        emit(rec)
