"""One compile of bpf/ per session; each test starts from empty maps.

Packets run through BPF_PROG_TEST_RUN on the host kernel: the verdict and the
skb mark after the program are what the kernel would route by."""

from __future__ import annotations

import ctypes
import struct

import pytest

from argoctl import bpfsys, datapath, maps, names

MASK = names.DEFAULT_FWMARK_MASK
TC_ACT_OK = 0
SKB_CTX_SIZE = 12   # struct __sk_buff up to and including `mark`
SKB_MARK_OFF = 8


class Datapath:
    def __init__(self, bpf):
        self.bpf = bpf
        self.progs = datapath.load_programs(bpf, ["steer_eth", "passive_eth"])
        self.maps = maps.Maps(fds=datapath.map_fds(bpf))

    def run(self, pkt, mark: int = 0, prog: str = "steer_eth") -> tuple[int, int]:
        """(verdict, skb mark afterwards) of one packet."""
        ctx = bytearray(SKB_CTX_SIZE)
        struct.pack_into("<I", ctx, SKB_MARK_OFF, mark)
        ret, _, _, ctx_out = bpfsys.test_run(self.progs[prog], bytes(pkt), ctx=bytes(ctx))
        return ret, struct.unpack_from("<I", ctx_out, SKB_MARK_OFF)[0]

    def mark_of(self, pkt, mark: int = 0) -> int:
        verdict, out = self.run(pkt, mark)
        assert verdict == TC_ACT_OK
        return out

    def reset(self) -> None:
        """Empty every map (LPM tries, path sets, flows, counters) and enable steering
        (protective reroute on, as by default)."""
        m = self.maps
        for name, ksize in (("dst_v4", 8), ("dst_v6", 20), ("pathsets", 4), ("flows", 40)):
            fd = m.fd[name]
            key = ctypes.create_string_buffer(ksize)
            while bpfsys.next_key(fd, None, key):
                bpfsys.delete(fd, key)
        ncpu = bpfsys.possible_cpus()
        for name, ctype, n in (("path_stats", maps.PathStats, maps.MAX_PATH_IDS),
                               ("dest_stats", maps.DestStats, 64)):
            zero = (ctype * ncpu)()
            for i in range(n):
                bpfsys.update(m.fd[name], maps.u32(i), zero)
        bpfsys.update(m.fd["settings"], maps.u32(0), maps.Settings())
        m.write_settings(MASK, reroute=True)   # policy.reroute defaults on


@pytest.fixture(scope="session")
def _compiled():
    # Small maps: the tests need few entries and compile time matters.
    b = datapath.compile_bpf(None, datapath.Sizes(max_dests=1024, max_prefixes_v4=4096,
                                                  max_prefixes_v6=4096, max_flows=65536))
    yield Datapath(b)
    b.cleanup()


@pytest.fixture
def dp(_compiled):
    _compiled.reset()
    return _compiled


def mark(path_id: int) -> int:
    return names.path_mark(path_id, MASK)


def paths(*weights, down=()) -> list[maps.Path]:
    """Path set with ids 1..n, marks of those ids, the given weights."""
    return [maps.Path(path_id=i + 1, mark=mark(i + 1), weight=w, up=(i + 1) not in down)
            for i, w in enumerate(weights)]
