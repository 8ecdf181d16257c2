"""A WireGuard device's configuration read back over generic netlink (pyroute2's
WireGuard socket), as plain values: what `up` compares and `status` shows."""

from __future__ import annotations

from argoctl.plan import Link


def wg_info(wg, name: str) -> dict:
    """Device and (first) peer attributes of a WireGuard device, as plain values."""
    msg = wg.info(name)[0]
    dev = {"listen_port": msg.get_attr("WGDEVICE_A_LISTEN_PORT"),
           "private_key": msg.get_attr("WGDEVICE_A_PRIVATE_KEY"),
           "public_key": msg.get_attr("WGDEVICE_A_PUBLIC_KEY"), "peers": []}
    for peer in msg.get_attr("WGDEVICE_A_PEERS") or []:
        ep = peer.get_attr("WGPEER_A_ENDPOINT")
        endpoint = None
        if ep and ep.get("addr") and ep.get("port"):
            addr = ep["addr"]
            endpoint = f"[{addr}]:{ep['port']}" if ":" in addr else f"{addr}:{ep['port']}"
        allowed = []
        for a in peer.get_attr("WGPEER_A_ALLOWEDIPS") or []:
            allowed.append(a.get("addr"))
        hs = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME") or {}
        dev["peers"].append({
            "public_key": _b64(peer.get_attr("WGPEER_A_PUBLIC_KEY")),
            "endpoint": endpoint,
            "keepalive": peer.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL"),
            "allowed_ips": tuple(sorted(a for a in allowed if a)),
            "last_handshake": hs.get("tv_sec", 0) if isinstance(hs, dict) else 0,
            "rx_bytes": peer.get_attr("WGPEER_A_RX_BYTES"),
            "tx_bytes": peer.get_attr("WGPEER_A_TX_BYTES"),
        })
    return dev


def _b64(v):
    if isinstance(v, dict):
        v = v.get("value")
    if isinstance(v, bytes):
        v = v.decode()
    return v


def read_link(name, mtu, wg) -> Link:
    """A WireGuard device's settings as plan.Link (what `up` compares)."""
    d = wg_info(wg, name)
    peer = d["peers"][0] if len(d["peers"]) == 1 else None
    private = _b64(d["private_key"])
    if private:
        import base64
        private = base64.b64decode(private)
    return Link(name=name, kind="wireguard", mtu=mtu, listen_port=d["listen_port"],
                public_key=_b64(d["public_key"]),
                peer_public_key=peer["public_key"] if peer else None,
                endpoint=peer["endpoint"] if peer else None,
                keepalive=(peer["keepalive"] or None) if peer else None,
                allowed_ips=_canonical_ips(peer["allowed_ips"]) if peer else (),
                private_key=private or None)


def _canonical_ips(ips) -> tuple:
    order = {"0.0.0.0/0": 0, "::/0": 1}
    return tuple(sorted(ips, key=lambda s: (order.get(s, 2), s)))
