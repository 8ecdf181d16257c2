"""The test bed itself, on a kernel with GRE, WireGuard and netem (the VM here): plain
`ip`/`wg` tunnels between two namespaces pass traffic, a one-way netem delay shows in
the RTT, a one-way blackhole stops exactly one direction. Tests the bed, not argoctl."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from argoctl.lab.topo import udp_delivers

TUN = {"a": "198.51.100.201", "b": "198.51.100.202"}


def link_stats(host, ifname: str) -> dict:
    out = host.run(["ip", "-j", "-s", "link", "show", "dev", ifname], check=True).stdout
    return json.loads(out)[0]["stats64"]


def min_rtt_ms(host, dst: str, count: int = 4) -> float:
    out = host.run(["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", dst],
                   timeout=60).stdout
    m = re.search(r"= ([\d.]+)/", out)
    assert m, f"no reply from {dst}:\n{out}"
    return float(m.group(1))


def netem_of(host, ifname: str) -> str:
    return host.run(["tc", "qdisc", "show", "dev", ifname], check=True).stdout


@pytest.mark.parametrize("kind", ["gre", "ip6gre"])
def test_gre_tunnel_between_namespaces_passes_traffic(pair, kind):
    a, b = pair["a"], pair["b"]
    family = 4 if kind == "gre" else 6
    for x, y in ((a, b), (b, a)):
        x.run(["ip", "link", "add", "gre1", "type", kind, "local", x.address(family),
               "remote", y.address(family), "ttl", "64"], check=True)
        x.run(["ip", "address", "add", TUN[x.name], "peer", TUN[y.name], "dev", "gre1"],
              check=True)
        x.run(["ip", "link", "set", "gre1", "up"], check=True)
    under_before = link_stats(b, "to-a")["rx"]["packets"]
    assert a.ping(TUN["b"], count=3, timeout=3)
    assert link_stats(a, "gre1")["tx"]["packets"] >= 3
    assert link_stats(b, "gre1")["rx"]["packets"] >= 3
    assert link_stats(b, "to-a")["rx"]["packets"] - under_before >= 3   # carried by the underlay


def test_wireguard_tunnel_between_namespaces_passes_traffic(pair, tmp_path):
    a, b = pair["a"], pair["b"]
    public = {}
    for h in (a, b):
        key = tmp_path / f"{h.name}.key"
        private = subprocess.run(["wg", "genkey"], capture_output=True, text=True,
                                 check=True).stdout
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private)
        public[h.name] = subprocess.run(["wg", "pubkey"], input=private, capture_output=True,
                                        text=True, check=True).stdout.strip()
    for x, y in ((a, b), (b, a)):
        x.run(["ip", "link", "add", "wg1", "type", "wireguard"], check=True)
        x.run(["wg", "set", "wg1", "private-key", str(tmp_path / f"{x.name}.key"),
               "listen-port", "51820", "peer", public[y.name],
               "endpoint", f"{y.loopback}:51820", "allowed-ips", "0.0.0.0/0,::/0"], check=True)
        x.run(["ip", "address", "add", TUN[x.name], "peer", TUN[y.name], "dev", "wg1"],
              check=True)
        x.run(["ip", "link", "set", "wg1", "up"], check=True)
    assert a.ping(TUN["b"], count=3, timeout=5)
    handshakes = a.run(["wg", "show", "wg1", "latest-handshakes"], check=True).stdout.split()
    assert int(handshakes[1]) > 0
    rx, tx = map(int, b.run(["wg", "show", "wg1", "transfer"], check=True).stdout.split()[1:3])
    assert rx > 0 and tx > 0


def test_one_way_netem_delay_shows_in_rtt(pair):
    a, b = pair["a"], pair["b"]
    base = min_rtt_ms(a, b.loopback)
    assert base < 50
    link = pair.link(a, b)
    link.impair(delay_ms=100, direction="a->b")
    assert "netem" in netem_of(a, "to-b") and "netem" not in netem_of(b, "to-a")
    delayed = min_rtt_ms(a, b.loopback)
    assert 100 <= delayed < 100 + base + 300, delayed
    assert 100 <= min_rtt_ms(b, a.loopback) < 100 + base + 300   # same for b's pings
    link.clear()
    assert "netem" not in netem_of(a, "to-b")
    assert min_rtt_ms(a, b.loopback) < 50


def test_one_way_blackhole_stops_one_direction(pair):
    a, b = pair["a"], pair["b"]
    link = pair.link(a, b)
    link.impair(blackhole=True, direction="b->a")
    assert "loss 100%" in netem_of(b, "to-a")
    assert not udp_delivers(b, a, a.loopback, timeout=0.5)
    assert not udp_delivers(b, a, a.loopback6, timeout=0.5)
    assert udp_delivers(a, b, b.loopback)
    assert udp_delivers(a, b, b.loopback6)
    assert not a.ping(b.loopback, timeout=1)      # the replies are lost
    link.clear()
    assert a.ping(b.loopback) and udp_delivers(b, a, a.loopback)


def test_guest_has_bpffs_cgroup2_and_modules():
    fs = subprocess.run(["stat", "-f", "-c", "%T", "/sys/fs/bpf",
                         os.environ.get("ARGOCTL_CGROUP2", "/sys/fs/cgroup")],
                        capture_output=True, text=True, check=True).stdout.split()
    assert fs == ["bpf_fs", "cgroup2fs"]
    for mod in ("sch_netem", "wireguard", "ip_gre"):
        assert subprocess.run(["modprobe", mod]).returncode == 0
