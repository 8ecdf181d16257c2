"""ctypes mirrors of bpf/include/structs.h, the map writer and counter readers.

The writer replaces a destination's whole path set in one map update (the
kernel swaps the element under RCU: a packet sees the old set or the new one),
and programs many destinations with BPF_MAP_UPDATE_BATCH where the map type
has it (hash maps), else with a tight loop of updates (LPM tries on 6.1).
Everything goes through the pinned maps, so any process can write them."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from argoctl import bpfsys, names

ABI = 4          # ARGOCTL_ABI in bpf/include/consts.h
MAX_PATHS = 8
MAX_PATH_IDS = 256
PATH_DOWN, PATH_UP = 0, 1
FLOW_SYN_RETRANS = 1
SETTING_REROUTE = 1   # settings.flags: protective reroute on
MAX_REROUTES = 2      # re-pins per flow / local socket
PIN_IDLE_NS = 30 * 10**9   # a non-TCP pin idle this long is placed anew
PIN_TOUCH_NS = 10**9       # flow_val.seen_ns granularity

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class LpmV4Key(ctypes.Structure):
    _fields_ = [("prefixlen", u32), ("addr", u8 * 4)]


class LpmV6Key(ctypes.Structure):
    _fields_ = [("prefixlen", u32), ("addr", u8 * 16)]


class PathEntry(ctypes.Structure):
    _fields_ = [("mark", u32), ("weight", u16), ("state", u8), ("path_id", u8)]


class PathSet(ctypes.Structure):
    _fields_ = [("generation", u32), ("count", u8), ("pad", u8 * 3),
                ("paths", PathEntry * MAX_PATHS)]


class FlowKey(ctypes.Structure):
    _fields_ = [("saddr", u8 * 16), ("daddr", u8 * 16), ("sport", u16), ("dport", u16),
                ("proto", u8), ("family", u8), ("pad", u8 * 2)]


class FlowVal(ctypes.Structure):
    _fields_ = [("dest_id", u32), ("generation", u32), ("mark", u32), ("lpm_epoch", u32),
                ("path_idx", u8), ("path_id", u8), ("flags", u8), ("reroutes", u8),
                ("tried", u8), ("pad", u8 * 3), ("syn_ns", u64), ("seen_ns", u64)]


class Settings(ctypes.Structure):
    _fields_ = [("abi", u32), ("fwmark_mask", u32), ("lpm_epoch", u32), ("flags", u32)]


class SockMark(ctypes.Structure):
    _fields_ = [("mark", u32), ("path_id", u32), ("dest_id", u32), ("path_idx", u8),
                ("reroutes", u8), ("tried", u8), ("pad", u8)]


class DestStats(ctypes.Structure):
    _fields_ = [("packets", u64), ("bytes", u64)]


class PathStats(ctypes.Structure):
    _fields_ = [("packets", u64), ("bytes", u64), ("syns", u64), ("synacks", u64),
                ("rtt_sum_ns", u64), ("rtt_count", u64), ("flows_moved", u64),
                ("sockets", u64), ("reroutes", u64)]


# Every struct shared with C, by its C name (tests/bpf/test_layout.py).
SHARED_STRUCTS = {
    "lpm_v4_key": LpmV4Key, "lpm_v6_key": LpmV6Key, "path_entry": PathEntry,
    "pathset": PathSet, "flow_key": FlowKey, "flow_val": FlowVal, "settings": Settings,
    "dest_stats": DestStats, "path_stats": PathStats, "sock_mark": SockMark,
}

# Every map the programs share, pinned under the pin directory by this name.
MAP_NAMES = ("dst_v4", "dst_v6", "pathsets", "flows", "settings", "dest_stats",
             "path_stats", "sock_marks")

# Bulk encoders (struct.pack is ~50x faster than filling ctypes fields);
# tests check they produce the same bytes as the ctypes mirrors.
_PATHSET = struct.Struct("<IB3x" + "IHBB" * MAX_PATHS)
_U32 = struct.Struct("<I")
PREFIX_LEN = _U32       # an LPM key's prefixlen field (then the address, network order)
assert _PATHSET.size == ctypes.sizeof(PathSet)


@dataclass(frozen=True)
class Path:
    """One entry of a destination's path set, as the writer takes it. Checked
    here, once, so encoding many path sets stays a tight loop."""
    path_id: int
    mark: int
    weight: int = 1
    up: bool = True

    def __post_init__(self):
        if not (0 <= self.weight <= 0xFFFF and 0 <= self.path_id < MAX_PATH_IDS
                and 0 <= self.mark <= 0xFFFFFFFF):
            raise ValueError(f"path {self.path_id}: weight 0..65535, id 0..{MAX_PATH_IDS - 1} "
                             f"and a 32-bit mark required (got weight {self.weight}, "
                             f"mark {self.mark:#x})")


def encode_pathset(paths: Sequence[Path], generation: int = 0) -> bytes:
    if len(paths) > MAX_PATHS:
        raise ValueError(f"a destination has at most {MAX_PATHS} paths, got {len(paths)}")
    # state: PATH_UP == True == 1, PATH_DOWN == False == 0
    flat = [x for p in paths for x in (p.mark, p.weight, p.up, p.path_id)]
    return _PATHSET.pack(generation & 0xFFFFFFFF, len(paths), *flat, *_EMPTY_TAIL[len(paths)])


_EMPTY_TAIL = [(0, 0, 0, 0) * (MAX_PATHS - n) for n in range(MAX_PATHS + 1)]


def decode_pathset(raw: bytes) -> tuple[int, list[Path]]:
    v = _PATHSET.unpack(raw)
    gen, count = v[0], v[1]
    paths = [Path(path_id=v[2 + 4 * i + 3], mark=v[2 + 4 * i], weight=v[2 + 4 * i + 1],
                  up=v[2 + 4 * i + 2] == PATH_UP) for i in range(count)]
    return gen, paths


def encode_prefix(net) -> tuple[int, bytes]:
    """(family, LPM key bytes) of a prefix: prefixlen, then the address in network order.

    Strings take a fast path (inet_pton); host bits must be zero either way."""
    if isinstance(net, str) and "/" in net:
        addr, _, plen_s = net.partition("/")
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        try:
            packed = socket.inet_pton(fam, addr)
            plen = int(plen_s)
        except (OSError, ValueError):
            raise ValueError(f"not a prefix: {net!r}") from None
        bits = len(packed) * 8
        if not 0 <= plen <= bits or (plen < bits and int.from_bytes(packed, "big") & ((1 << (bits - plen)) - 1)):
            raise ValueError(f"not a prefix (host bits set or bad length): {net!r}")
        return (4 if bits == 32 else 6), _U32.pack(plen) + packed
    net = ipaddress.ip_network(net)
    return net.version, _U32.pack(net.prefixlen) + net.network_address.packed


def _possible_errnos_no_batch(e: OSError) -> bool:
    # EINVAL / EOPNOTSUPP / ENOTSUPP(524): the map type has no batch op here.
    return e.errno in (22, 95, 524)


class Maps:
    """The datapath's maps, opened by pin path (or handed fds by a fresh load)."""

    def __init__(self, pin_dir: str = names.BPF_PIN_DIR, fds: Optional[Mapping[str, int]] = None):
        self.pin_dir = pin_dir
        self._owned: list[int] = []
        self.fd: dict[str, int] = {}
        if fds is not None:
            self.fd.update(fds)
        else:
            for name in MAP_NAMES:
                path = os.path.join(pin_dir, name)
                if os.path.exists(path):
                    fd = bpfsys.obj_get(path)
                    self._owned.append(fd)
                    self.fd[name] = fd
            missing = [n for n in MAP_NAMES[:7] if n not in self.fd]
            if missing:
                self.close()
                raise FileNotFoundError(
                    f"datapath maps not pinned in {pin_dir}: {', '.join(missing)} "
                    "(is the datapath attached? run `argoctl up`)")
        self._batch_ok: dict[str, bool] = {}

    def close(self) -> None:
        for fd in self._owned:
            os.close(fd)
        self._owned.clear()

    def __enter__(self) -> "Maps":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- settings ---------------------------------------------------------
    def settings(self) -> Settings:
        s = Settings()
        bpfsys.lookup(self.fd["settings"], u32(0), s)
        return s

    def write_settings(self, fwmark_mask: int, bump_epoch: bool = False,
                       reroute: Optional[bool] = None) -> Settings:
        """Enable steering with this mark mask (0 disables: everything passes
        untouched); `reroute` sets protective reroute (None: leave as is)."""
        s = self.settings()
        s.abi = ABI
        s.fwmark_mask = fwmark_mask
        if reroute is not None:
            s.flags = (s.flags | SETTING_REROUTE) if reroute else (s.flags & ~SETTING_REROUTE)
        if bump_epoch:
            s.lpm_epoch = (s.lpm_epoch + 1) & 0xFFFFFFFF
        bpfsys.update(self.fd["settings"], u32(0), s)
        return s

    # -- batch plumbing ---------------------------------------------------
    def _write_many(self, name: str, key_size: int, value_size: int,
                    items: Sequence[tuple[bytes, bytes]], chunk: int = 8192) -> None:
        fd = self.fd[name]
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            n = len(part)
            keys = (ctypes.c_uint8 * (key_size * n)).from_buffer_copy(b"".join(k for k, _ in part))
            vals = (ctypes.c_uint8 * (value_size * n)).from_buffer_copy(b"".join(v for _, v in part))
            if self._batch_ok.get(name, True):
                try:
                    bpfsys.update_batch(fd, keys, vals, n)
                    self._batch_ok[name] = True
                    continue
                except OSError as e:
                    if not _possible_errnos_no_batch(e):
                        raise
                    self._batch_ok[name] = False
            # No batch op for this map type: one update per element.
            kaddr, vaddr = ctypes.addressof(keys), ctypes.addressof(vals)
            for i in range(n):
                bpfsys.update(fd, kaddr + i * key_size, vaddr + i * value_size)

    # -- prefixes ---------------------------------------------------------
    def set_prefixes(self, prefixes: Iterable[tuple[object, int]], bump_epoch: bool = True) -> None:
        """Map prefixes to destination ids. Pinned flows re-resolve their
        destination on their next packet when the epoch is bumped."""
        self.set_prefix_keys([(encode_prefix(net), i) for net, i in prefixes], bump_epoch)

    def set_prefix_keys(self, prefixes: Iterable[tuple[tuple[int, bytes], int]],
                        bump_epoch: bool = True) -> None:
        """set_prefixes, with the prefixes as encode_prefix's (family, key)."""
        v4: list[tuple[bytes, bytes]] = []
        v6: list[tuple[bytes, bytes]] = []
        for (fam, key), dest_id in prefixes:
            (v4 if fam == 4 else v6).append((key, _U32.pack(dest_id)))
        if v4:
            self._write_many("dst_v4", 8, 4, v4)
        if v6:
            self._write_many("dst_v6", 20, 4, v6)
        if bump_epoch and (v4 or v6):
            s = self.settings()
            s.lpm_epoch = (s.lpm_epoch + 1) & 0xFFFFFFFF
            bpfsys.update(self.fd["settings"], u32(0), s)

    def remove_prefixes(self, prefixes: Iterable[object]) -> None:
        self.remove_prefix_keys([encode_prefix(net) for net in prefixes])

    def remove_prefix_keys(self, keys: Iterable[tuple[int, bytes]]) -> None:
        for fam, key in keys:
            buf = ctypes.create_string_buffer(key, len(key))
            bpfsys.delete(self.fd["dst_v4" if fam == 4 else "dst_v6"], buf)
        self.write_settings(self.settings().fwmark_mask, bump_epoch=True)

    def prefixes(self) -> dict[str, int]:
        """Every prefix in the tries -> destination id."""
        out: dict[str, int] = {}
        for (fam, key), dest_id in self.prefix_keys().items():
            out[f"{ipaddress.ip_address(key[4:])}/{_U32.unpack(key[:4])[0]}"] = dest_id
        return out

    def prefix_keys(self) -> dict[tuple[int, bytes], int]:
        """Every prefix in the tries as encode_prefix's (family, key) -> destination
        id: no text, for comparing thousands of prefixes."""
        out: dict[tuple[int, bytes], int] = {}
        for name, size, fam in (("dst_v4", 8, 4), ("dst_v6", 20, 6)):
            fd = self.fd[name]
            if self._batch_ok.get("read " + name, True):
                # BPF_MAP_LOOKUP_BATCH (LPM tries: the kernel's generic batch, a
                # next-key and lookup per entry in the kernel): a system call per
                # 4096 prefixes instead of two per prefix
                try:
                    got = {(fam, k): _U32.unpack(v)[0]
                           for k, v in bpfsys.lookup_batch(fd, size, 4)}
                    self._batch_ok["read " + name] = True
                    out.update(got)
                    continue
                except OSError as e:
                    if not _possible_errnos_no_batch(e):
                        raise
                    self._batch_ok["read " + name] = False
            key = ctypes.create_string_buffer(size)
            nxt = ctypes.create_string_buffer(size)
            val = u32()
            prev = None
            while bpfsys.next_key(fd, prev, nxt):
                ctypes.memmove(key, nxt, size)
                if bpfsys.lookup(fd, key, val):
                    out[(fam, key.raw)] = val.value
                prev = key
        return out

    # -- path sets --------------------------------------------------------
    def pathset(self, dest_id: int) -> Optional[tuple[int, list[Path]]]:
        buf = ctypes.create_string_buffer(_PATHSET.size)
        if not bpfsys.lookup(self.fd["pathsets"], u32(dest_id), buf):
            return None
        return decode_pathset(buf.raw)

    def pathsets(self) -> dict[int, tuple[int, list[Path]]]:
        """Every destination's (generation, paths): one batched read, not a
        lookup per destination."""
        return {_U32.unpack(k)[0]: decode_pathset(v)
                for k, v in bpfsys.lookup_batch(self.fd["pathsets"], 4, _PATHSET.size)}

    def generations(self) -> dict[int, int]:
        """Current generation of every destination (one batched read)."""
        gens = {}
        for k, v in bpfsys.lookup_batch(self.fd["pathsets"], 4, _PATHSET.size):
            gens[_U32.unpack(k)[0]] = _U32.unpack(v[:4])[0]
        return gens

    def set_pathset(self, dest_id: int, paths: Sequence[Path], reset_flows: bool = False) -> None:
        """Replace one destination's path set atomically. Pinned flows stay on
        their path while it is up (weights move only new flows) unless
        reset_flows, which bumps the generation and re-places every flow."""
        cur = self.pathset(dest_id)
        gen = cur[0] if cur else 0
        raw = encode_pathset(paths, gen + 1 if reset_flows else gen)
        buf = ctypes.create_string_buffer(raw, len(raw))
        bpfsys.update(self.fd["pathsets"], u32(dest_id), buf)

    def set_pathsets(self, sets: Mapping[int, Sequence[Path]], reset_flows: bool = False) -> None:
        """Replace many path sets in batched updates (each one still atomic)."""
        gens = self.generations() if sets else {}
        items = []
        for dest_id, paths in sets.items():
            if not 0 < dest_id < 2 ** 32:
                raise ValueError(f"destination id {dest_id} outside 1..2^32-1")
            gen = gens.get(dest_id, 0) + (1 if reset_flows else 0)
            items.append((_U32.pack(dest_id), encode_pathset(paths, gen)))
        self._write_many("pathsets", 4, _PATHSET.size, items)

    def remove_destination(self, dest_id: int) -> None:
        bpfsys.delete(self.fd["pathsets"], u32(dest_id))

    def dest_ids(self) -> list[int]:
        return sorted(self.generations())

    # -- counters ---------------------------------------------------------
    def _percpu(self, name: str, index: int, ctype):
        ncpu = bpfsys.possible_cpus()
        size = ctypes.sizeof(ctype)  # multiples of 8 already: no per-slot rounding
        buf = (ctype * ncpu)()
        if not bpfsys.lookup(self.fd[name], u32(index), buf):
            return ctype()
        total = ctype()
        for fname, _ in ctype._fields_:
            setattr(total, fname, sum(getattr(buf[i], fname) for i in range(ncpu)))
        assert size % 8 == 0
        return total

    def path_stats(self, path_id: int) -> PathStats:
        return self._percpu("path_stats", path_id, PathStats)

    def dest_stats(self, dest_id: int) -> DestStats:
        return self._percpu("dest_stats", dest_id, DestStats)

    def flow(self, key: FlowKey) -> Optional[FlowVal]:
        v = FlowVal()
        return v if bpfsys.lookup(self.fd["flows"], key, v) else None

    def clear_flows(self) -> int:
        """Forget every pinned flow (tests and `down`); returns how many."""
        fd = self.fd["flows"]
        key = FlowKey()
        n = 0
        while bpfsys.next_key(fd, None, key):
            bpfsys.delete(fd, key)
            n += 1
        return n


def reroute_on(s: Settings) -> bool:
    return bool(s.flags & SETTING_REROUTE)


def stats_dict(st: ctypes.Structure) -> dict[str, int]:
    return {name: getattr(st, name) for name, _ in st._fields_}
