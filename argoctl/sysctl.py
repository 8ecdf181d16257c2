"""Sysctls under /proc/sys (slash-separated paths): reading, writing, and the
per-device knobs a global forwarding write touches.

os.open/read/write, not open(): a text file object (its buffer, decoder, the
truncation) cost more than the system calls, and `up` at 100 peers reads 305
and writes 410 of these."""

from __future__ import annotations

import os
from typing import Optional


def read(path: str) -> Optional[str]:
    try:
        fd = os.open("/proc/sys/" + path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)


def write(path: str, value: str) -> None:
    fd = os.open("/proc/sys/" + path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


IPV6_FORWARDING = "net/ipv6/conf/all/forwarding"


def accept_ra_1() -> dict[str, str]:
    """{accept_ra path: "1"} of every device (and the default) that accepts router
    advertisements only while not forwarding: with forwarding on, such a SLAAC host
    would let its RA-learnt default route expire. 2 accepts them either way."""
    out = {}
    for dev in sorted(os.listdir("/proc/sys/net/ipv6/conf")):
        path = f"net/ipv6/conf/{dev}/accept_ra"
        if dev != "all" and read(path) == "1":
            out[path] = "1"
    return out


def device_forwarding(global_path: str) -> dict[str, str]:
    """{sysctl path: value} of every device's (and the default) forwarding knob of
    the family of `global_path` (net/ipv4/ip_forward or net/ipv6/conf/all/forwarding)."""
    base = "net/ipv4/conf" if global_path.startswith("net/ipv4/") else "net/ipv6/conf"
    out = {}
    for dev in sorted(os.listdir("/proc/sys/" + base)):
        if dev == "all":
            continue
        path = f"{base}/{dev}/forwarding"
        value = read(path)
        if value is not None:
            out[path] = value
    return out
