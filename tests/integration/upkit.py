"""Shared pieces of the `up` integration tests: lab configs, kernel snapshots,
interface counters and an in-process TCP sink/source (no extra Python processes:
they cost seconds each under TCG)."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading

from argoctl import config as cfg
from argoctl import keys

TUNNEL_ADDR = {"edge": "198.51.100.201", "relay1": "198.51.100.202"}
ORIGIN = "203.0.113.10"
ORIGIN6 = "2001:db8:f::10"
PORT = 5999
SO_MARK = 36
MB = 1 << 20


def write_configs(tmp, kind: str, gre_key=None) -> dict:
    """edge <-> relay1 over `kind`; returns {name: Config} loaded by the real loader."""
    keyfiles, pubs = {}, {}
    if kind == "wireguard":
        for n in ("edge", "relay1"):
            keyfiles[n] = str(tmp / f"{n}.key")
            pubs[n] = keys.encode(keys.write_key_pair(keyfiles[n]))
    underlay = {"edge": "192.0.2.1", "relay1": "192.0.2.2"}
    out = {}
    for me, other in (("edge", "relay1"), ("relay1", "edge")):
        text = f'[node]\nname = "{me}"\naddress = "{underlay[me]}"\n' \
               f'tunnel_address = "{TUNNEL_ADDR[me]}"\n'
        if kind == "wireguard":
            text += f'private_key_file = "{keyfiles[me]}"\n'
        text += f'[[peer]]\nname = "{other}"\naddress = "{underlay[other]}"\n' \
                f'tunnel = "{kind}"\ntunnel_address = "{TUNNEL_ADDR[other]}"\nid = 1\n'
        if kind == "wireguard":
            text += f'public_key = "{pubs[other]}"\nport = 51820\nlisten_port = 51820\n'
        if gre_key is not None:
            text += f"gre_key = {gre_key}\n"
        text += '[[destination]]\nname = "origin"\nprefixes = ["203.0.113.0/24"]\n' \
                'paths = ["direct", "' + other + '"]\n'
        path = tmp / f"{me}.toml"
        path.write_text(text)
        out[me] = cfg.load(str(path))
    return out


# ---------------------------------------------------------------------------- snapshots

SNAPSHOT = {
    "links": "ip -j link show", "addrs": "ip -j addr show", "rules4": "ip -j -4 rule show",
    "rules6": "ip -j -6 rule show", "routes4": "ip -j -4 route show table all",
    "routes6": "ip -j -6 route show table all", "nft": "nft list ruleset",
    "sysctl": "sysctl net.ipv4.ip_forward net.ipv6.conf.all.forwarding",
}


def snapshot(host) -> dict:
    """Everything `down` must restore, as the user would inspect it (one shell: processes
    are expensive under TCG)."""
    sep = "\n@@argoctl-snapshot@@\n"
    script = "; ".join(f"{cmd}; printf '{sep}'" for cmd in SNAPSHOT.values())
    out = host.run(["sh", "-ec", script], check=True).stdout.split(sep.strip("\n") + "\n")
    snap = {}
    for key, text in zip(SNAPSHOT, out):
        text = text.rstrip("\n")
        snap[key] = json.loads(text or "[]") if SNAPSHOT[key].startswith("ip -j") else text
    return snap


def counters(host, ifname: str) -> dict:
    with host.ipr() as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        stats = ipr.get_links(idx)[0].get_attr("IFLA_STATS64")
    return {k: stats[k] for k in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes")}


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


# ---------------------------------------------------------------------------- TCP

class Server:
    """TCP server in `host`: each connection sends a header (upload, download sizes),
    then the client sends `upload` bytes and the server answers with `download` bytes.
    Remembers each connection's peer address and byte count."""

    def __init__(self, host, port=PORT, family=socket.AF_INET):
        with host.inside():
            self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.sock.bind(("0.0.0.0" if family == socket.AF_INET else "::", port))
        self.sock.listen(16)
        self.seen = []      # (peer ip, bytes received)
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, peer), daemon=True).start()

    def _serve(self, conn, peer):
        with conn:
            conn.settimeout(120)
            up, down = struct.unpack("!QQ", _recv_exact(conn, 16))
            got = 0
            buf = bytearray(256 * 1024)
            while got < up:
                n = conn.recv_into(buf, min(len(buf), up - got))
                if n == 0:
                    break
                got += n
            _send_zeros(conn, down)
            conn.sendall(b"E")
            self.seen.append((peer[0], got))

    def close(self):
        self.sock.close()


def _recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed early")
        data += chunk
    return data


def _send_zeros(conn, n):
    block = bytes(256 * 1024)
    while n > 0:
        k = min(n, len(block))
        conn.sendall(block[:k] if k < len(block) else block)
        n -= k


def transfer(host, dst=ORIGIN, port=PORT, mark=None, upload=64 * 1024, download=64 * 1024,
             timeout=120) -> int:
    """Connect from `host` (optionally with SO_MARK), move the bytes both ways; return
    the bytes received. Raises on a stall (socket timeout)."""
    with host.inside():
        s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
    with s:
        if mark is not None:
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        s.settimeout(timeout)
        s.connect((dst, port))
        s.sendall(struct.pack("!QQ", upload, download))
        _send_zeros(s, upload)
        got = 0
        buf = bytearray(256 * 1024)
        while got < download + 1:
            n = s.recv_into(buf)
            if n == 0:
                break
            got += n
        return got - 1
