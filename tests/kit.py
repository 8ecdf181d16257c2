"""Helpers only tests use: find a probe's port, capture and forge probe replies.
Fixtures live in tests/plugin.py."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from argoctl import mac


# -- forged and replayed replies -------------------------------------------------------

def probe_addr(daemon, path: str) -> tuple[str, int]:
    """The local (address, port) of the daemon's probe socket for `path` (IPv4):
    the steered LAN's side of the node (probe/source.py)."""
    mark = daemon.cfg.routing.mark(daemon.cfg.path_id(path))
    return daemon.sched.channels[("udp", mark, socket.AF_INET)].sock.getsockname()[:2]


def probe_port(daemon, path: str) -> int:
    """The local UDP port of the daemon's probe socket for `path` (IPv4)."""
    return probe_addr(daemon, path)[1]


def capture_replies(host, ifname: str, port: int, seconds: float) -> list[bytes]:
    """What an on-path eavesdropper sees: UDP payloads to `port` arriving on `ifname`."""
    with host.inside():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    out = []
    with s:
        s.bind((ifname, 0x0800))
        s.settimeout(0.1)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                pkt = s.recv(2048)
            except socket.timeout:
                continue
            ihl = (pkt[0] & 0x0F) * 4
            if pkt[9] == socket.IPPROTO_UDP and struct.unpack("!H", pkt[ihl + 2:ihl + 4])[0] == port:
                out.append(pkt[ihl + 8:])
    return out


def ip_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP datagram (UDP checksum 0: none) for a raw socket."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP,
                       0, socket.inet_aton(src), socket.inet_aton(dst)) + udp


def spoof(host, payloads, src: str, sport: int, dst: str, dport: int,
          pps: float = 500) -> int:
    """Send `payloads` from `host` with a forged source address; returns how many."""
    with host.inside():
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    n = 0
    with raw:
        for p in payloads:
            raw.sendto(ip_udp(src, sport, dst, dport, p), (dst, 0))
            n += 1
            time.sleep(1.0 / pps)
    return n


def forged_replies(captured: list[bytes], count: int) -> list[bytes]:
    """Replies made without the key: a wrong key's MACs, captured ones with a flipped
    bit, and garbage."""
    evil = mac.EchoKey(b"not-the-key-".ljust(32, b"x"))
    out = [evil.reply(mac.Echo(mac.REQUEST, s, time.monotonic_ns(), os.urandom(16), 0), 1)
           for s in range(1, count + 1)]
    out += [c[:30] + bytes([c[30] ^ 0xFF]) + c[31:] for c in captured]
    out += [b"", b"x" * 64]
    return out


def direct_only_edge(directory) -> tuple[str, str]:
    """edge's config in the standard lab with one destination over direct only
    (UDP probes to the lab's responder every 100 ms) and a fresh probe key:
    (config path, key path), both in `directory`."""
    from argoctl.lab import loop as looplab
    key = os.path.join(str(directory), "probe.key")
    mac.write_key(key)
    cfg = os.path.join(str(directory), "edge.toml")
    with open(cfg, "w") as f:
        f.write(f"""[node]
name = "edge"
address = "192.0.2.1"
tunnel_address = "198.51.100.129"
steer_interfaces = ["to-client"]

[[destination]]
name = "origin"
prefixes = ["203.0.113.0/24"]
paths = ["direct"]
probe = {{ kind = "udp", target = "{looplab.ORIGIN}", port = {looplab.RESPONDER_PORT} }}

[policy]
probe_interval_ms = 100
responder_key_file = "{key}"
metrics_listen = ""
""")
    return cfg, key


def check_fleet_scenario(fleet: dict) -> dict:
    """What the demo's fleet scenario must show, with real tunnels or stand-in
    paths alike: fleet mode, the edge's requests saved, only relay2 reaching the
    origin (relay1 not), and before it one relay measured end to end while the
    other (k = 1) was composed from the bus. Returns the scenario's fleet part."""
    assert fleet["mode"] == "fleet", fleet
    assert fleet["argoctl"]["success_pct"] >= 95.0, fleet
    assert fleet["direct_only"]["success_pct"] <= 80.0, fleet
    assert fleet["requests_saved"] > 0.2 * fleet["direct_only"]["requests"], fleet
    f = fleet["fleet"]
    assert set(f["members"]) == {"edge", "relay1", "relay2"}, f
    assert f["via"] == "relay2" and f["reach"].get("relay2") == "up", f
    assert f.get("reach", {}).get("relay1") != "up", f
    assert f["reach_s"] is not None and f["reach_s"] < 10, f
    before = f["edge_paths_before"]
    assert sorted(before[r]["how"] for r in ("relay1", "relay2")) == \
        ["composed", "end-to-end"], before
    return f


@contextlib.contextmanager
def running_with_tcp(lab):
    """`lab` (a LoopLab) started with a TCP server on its origin (lab.tcp); both
    stopped on the way out, whatever happened."""
    from argoctl.lab import loop as looplab
    try:
        lab.start()
        lab.tcp = looplab.TcpServer(lab.topo["origin"])
        yield lab
    finally:
        if getattr(lab, "tcp", None):
            lab.tcp.stop()
        lab.stop()
