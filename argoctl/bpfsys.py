"""The bpf(2) system call through ctypes: just the commands argoctl needs.

A restarted argoctl talks to the pinned maps and programs with these calls
alone, so it never has to recompile the datapath with bcc (seconds of CPU)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import lru_cache

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long

NR_BPF = 321  # x86_64

# enum bpf_cmd
MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_DELETE_ELEM = 3
MAP_GET_NEXT_KEY = 4
OBJ_PIN = 6
OBJ_GET = 7
PROG_ATTACH = 8
PROG_DETACH = 9
PROG_TEST_RUN = 10
PROG_GET_FD_BY_ID = 13
OBJ_GET_INFO_BY_FD = 15
PROG_QUERY = 16
MAP_LOOKUP_BATCH = 24
MAP_UPDATE_BATCH = 26

# enum bpf_attach_type (cgroup socket-address hooks)
CGROUP_SOCK_OPS = 3
CGROUP_INET4_CONNECT = 10
CGROUP_INET6_CONNECT = 11
CGROUP_UDP4_SENDMSG = 14
CGROUP_UDP6_SENDMSG = 15

F_ALLOW_MULTI = 2
ANY = 0  # BPF_ANY update flag


class BpfError(OSError):
    pass


def _call(cmd: int, attr: ctypes.Structure) -> int:
    ret = _libc.syscall(NR_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf(cmd={cmd}): {os.strerror(err)}")
    return ret


def _ptr(buf) -> int:
    """Address of a ctypes object, or an address given as an int."""
    if buf is None:
        return 0
    return buf if isinstance(buf, int) else ctypes.addressof(buf)


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint32),
                ("key", ctypes.c_uint64), ("value", ctypes.c_uint64),
                ("flags", ctypes.c_uint64)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64),
                ("keys", ctypes.c_uint64), ("values", ctypes.c_uint64),
                ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _ObjAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32),
                ("file_flags", ctypes.c_uint32)]


class _AttachAttr(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("replace_bpf_fd", ctypes.c_uint32)]


class _QueryAttr(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


class _TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


class MapInfo(ctypes.Structure):
    """struct bpf_map_info (leading fields)."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16)]


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info (leading fields)."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("tag", ctypes.c_uint8 * 8), ("jited_prog_len", ctypes.c_uint32),
                ("xlated_prog_len", ctypes.c_uint32), ("jited_prog_insns", ctypes.c_uint64),
                ("xlated_prog_insns", ctypes.c_uint64), ("load_time", ctypes.c_uint64),
                ("created_by_uid", ctypes.c_uint32), ("nr_map_ids", ctypes.c_uint32),
                ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16)]


def lookup(fd: int, key, value) -> bool:
    """Fill `value` (a ctypes buffer) from the map; False if the key is absent."""
    attr = _ElemAttr(map_fd=fd, key=_ptr(key), value=_ptr(value))
    try:
        _call(MAP_LOOKUP_ELEM, attr)
    except BpfError as e:
        if e.errno == 2:  # ENOENT
            return False
        raise
    return True


def update(fd: int, key, value, flags: int = ANY) -> None:
    _call(MAP_UPDATE_ELEM, _ElemAttr(map_fd=fd, key=_ptr(key), value=_ptr(value), flags=flags))


def delete(fd: int, key) -> bool:
    try:
        _call(MAP_DELETE_ELEM, _ElemAttr(map_fd=fd, key=_ptr(key)))
    except BpfError as e:
        if e.errno == 2:
            return False
        raise
    return True


def next_key(fd: int, key, next_key_buf) -> bool:
    """Key after `key` (None: the first); False at the end."""
    attr = _ElemAttr(map_fd=fd, key=_ptr(key) if key is not None else 0,
                     value=_ptr(next_key_buf))
    try:
        _call(MAP_GET_NEXT_KEY, attr)
    except BpfError as e:
        if e.errno == 2:
            return False
        raise
    return True


def update_batch(fd: int, keys, values, count: int) -> int:
    """BPF_MAP_UPDATE_BATCH; returns how many were written (raises on error)."""
    attr = _BatchAttr(keys=_ptr(keys), values=_ptr(values), count=count, map_fd=fd)
    _call(MAP_UPDATE_BATCH, attr)
    return attr.count


def lookup_batch(fd: int, key_size: int, value_size: int, chunk: int = 4096):
    """Yield (key bytes, value bytes) for every entry, `chunk` per system call."""
    keys = (ctypes.c_uint8 * (key_size * chunk))()
    values = (ctypes.c_uint8 * (value_size * chunk))()
    # opaque batch position: a bucket index for hash maps, the last key for the
    # generic batch (arrays, LPM tries): room for either
    token = ctypes.create_string_buffer(max(8, key_size))
    first = True
    while True:
        attr = _BatchAttr(in_batch=0 if first else ctypes.addressof(token),
                          out_batch=ctypes.addressof(token), keys=_ptr(keys),
                          values=_ptr(values), count=chunk, map_fd=fd)
        done = False
        try:
            _call(MAP_LOOKUP_BATCH, attr)
        except BpfError as e:
            if e.errno != 2:  # ENOENT: this was the last batch
                raise
            done = True
        kb, vb = bytes(keys), bytes(values)
        for i in range(attr.count):
            yield (kb[i * key_size:(i + 1) * key_size], vb[i * value_size:(i + 1) * value_size])
        if done:
            return
        first = False


def obj_pin(fd: int, path: str) -> None:
    p = ctypes.create_string_buffer(path.encode())
    _call(OBJ_PIN, _ObjAttr(pathname=ctypes.addressof(p), bpf_fd=fd))


def obj_get(path: str) -> int:
    """Open a pinned map or program; the caller owns (and closes) the fd."""
    p = ctypes.create_string_buffer(path.encode())
    return _call(OBJ_GET, _ObjAttr(pathname=ctypes.addressof(p)))


def prog_attach(prog_fd: int, target_fd: int, attach_type: int, flags: int = F_ALLOW_MULTI) -> None:
    _call(PROG_ATTACH, _AttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd,
                                   attach_type=attach_type, attach_flags=flags))


def prog_detach(prog_fd: int, target_fd: int, attach_type: int) -> None:
    _call(PROG_DETACH, _AttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd,
                                   attach_type=attach_type))


def prog_query(target_fd: int, attach_type: int, max_progs: int = 64) -> list[int]:
    """Ids of the programs attached to a cgroup at `attach_type`."""
    ids = (ctypes.c_uint32 * max_progs)()
    attr = _QueryAttr(target_fd=target_fd, attach_type=attach_type,
                      prog_ids=ctypes.addressof(ids), prog_cnt=max_progs)
    _call(PROG_QUERY, attr)
    return list(ids[:attr.prog_cnt])


def _info(fd: int, info: ctypes.Structure) -> ctypes.Structure:
    _call(OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info),
                                        info=ctypes.addressof(info)))
    return info


def map_info(fd: int) -> MapInfo:
    return _info(fd, MapInfo())


def prog_info(fd: int) -> ProgInfo:
    return _info(fd, ProgInfo())


def prog_fd_by_id(prog_id: int) -> int:
    attr = _ElemAttr()
    ctypes.c_uint32.from_buffer(attr, 0).value = prog_id
    return _call(PROG_GET_FD_BY_ID, attr)


def test_run(prog_fd: int, data: bytes, repeat: int = 1, ctx: bytes | None = None,
             data_out_size: int = 0) -> tuple[int, int, bytes, bytes]:
    """BPF_PROG_TEST_RUN: (return value, average ns per run, data out, ctx out)."""
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(max(data_out_size, len(data) + 256))
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(data), data_size_out=len(dout),
                        data_in=ctypes.addressof(din), data_out=ctypes.addressof(dout),
                        repeat=repeat)
    cin = cout = None
    if ctx is not None:
        cin = ctypes.create_string_buffer(ctx, len(ctx))
        # The kernel writes back its whole context struct (ENOSPC if smaller).
        cout = ctypes.create_string_buffer(max(len(ctx), 1024))
        attr.ctx_size_in, attr.ctx_size_out = len(ctx), len(cout)
        attr.ctx_in, attr.ctx_out = ctypes.addressof(cin), ctypes.addressof(cout)
    _call(PROG_TEST_RUN, attr)
    return (attr.retval, attr.duration, dout.raw[:attr.data_size_out],
            cout.raw[:attr.ctx_size_out] if cout is not None else b"")


@lru_cache(maxsize=1)
def possible_cpus() -> int:
    """Per-CPU map values hold one slot per *possible* CPU."""
    with open("/sys/devices/system/cpu/possible") as f:
        n = 0
        for part in f.read().strip().split(","):
            lo, _, hi = part.partition("-")
            n = max(n, int(hi or lo) + 1)
        return n
