"""attach / adopt / program / status / detach on the host kernel, in a pair of
namespaces (veth) with pins on a private bpffs and hooks on a cgroup of the
test's own: what `argoctl up`, a restart and `down` do to a node."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
import subprocess
import tempfile
import time

import pytest

from argoctl import bpfsys, config as C, datapath, maps


def make_config(steer_if: str, dests: dict[str, list[str]]) -> C.Config:
    node = C.Node(name="a", address=ipaddress.ip_address("192.0.2.1"),
                  tunnel_address=ipaddress.ip_address("198.51.100.201"),
                  steer_interfaces=(steer_if,))
    peer = C.Peer(name="b", id=1, address=ipaddress.ip_address("192.0.2.2"), tunnel="gre",
                  tunnel_address=ipaddress.ip_address("198.51.100.202"))
    ds = tuple(C.Destination(name=n, id=i + 1, prefixes=tuple(ipaddress.ip_network(p) for p in ps),
                             paths=("direct", "b"), weights=(1, 3))
               for i, (n, ps) in enumerate(dests.items()))
    return C.Config(path="<test>", node=node, peers=(peer,), destinations=ds)


@pytest.fixture
def node(pair):
    mnt = tempfile.mkdtemp(prefix="argoctl-test-bpffs-")
    cg = os.path.join(datapath.cgroup2_root(), f"argoctl-test-{os.getpid()}")
    os.makedirs(cg, exist_ok=True)
    a = pair["a"]
    env = {"pin_dir": os.path.join(mnt, "pins"), "netns": a.netns, "cgroup": cg,
           "ifname": a.ifname(pair["b"])}
    try:
        yield env
    finally:
        datapath.detach(env["pin_dir"], netns=a.netns, cgroup=cg)
        subprocess.run(["umount", mnt], capture_output=True)
        _rmdir(mnt)
        _rmdir(cg)


def _rmdir(path: str, tries: int = 50) -> None:
    """rmdir, waiting out EBUSY (a cgroup whose last process is still exiting)."""
    for _ in range(tries):
        try:
            os.rmdir(path)
            return
        except OSError as e:
            if e.errno != 16:
                raise
            time.sleep(0.1)
    os.rmdir(path)


def attach(node, cfg):
    return datapath.attach(cfg, pin_dir=node["pin_dir"], netns=node["netns"], cgroup=node["cgroup"])


def test_attach_adopt_program_detach(node):
    cfg = make_config(node["ifname"], {"web": ["203.0.113.0/24", "2001:db8:f::/48"]})
    first = attach(node, cfg)
    assert first.compiled and first.steered == [node["ifname"]]
    assert first.newly_attached == [node["ifname"]]
    st = datapath.status(node["pin_dir"], netns=node["netns"], cgroup=node["cgroup"])
    assert st["loaded"] and st["cgroup_hooks"] and st["fwmark_mask"] == cfg.routing.fwmark_mask
    (name,) = st["filters"][node["ifname"]]
    assert name.startswith("argoctl-steer_eth-")

    # A restarted argoctl adopts: no compile, no filter touched, same programs.
    again = attach(node, cfg)
    assert not again.compiled and again.newly_attached == []
    assert datapath.status(node["pin_dir"], netns=node["netns"],
                           cgroup=node["cgroup"])["filters"] == st["filters"]

    datapath.program(cfg, node["pin_dir"])
    st = datapath.status(node["pin_dir"], netns=node["netns"], cgroup=node["cgroup"])
    d = st["destinations"][1]
    assert d["prefixes"] == ["2001:db8:f::/48", "203.0.113.0/24"]
    assert [(p["path_id"], p["mark"], p["weight"], p["up"]) for p in d["paths"]] == [
        (0, cfg.routing.mark(0), 1, True), (1, cfg.routing.mark(1), 3, True)]

    removed = datapath.detach(node["pin_dir"], netns=node["netns"], cgroup=node["cgroup"])
    assert removed["filters_removed"] == [node["ifname"]]
    assert not os.path.exists(node["pin_dir"])
    assert datapath.status(node["pin_dir"], netns=node["netns"]) == {"loaded": False}
    cg = os.open(node["cgroup"], os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert all(bpfsys.prog_query(cg, t) == [] for t in datapath.SOCK_PROGRAMS.values())
    finally:
        os.close(cg)


def test_program_reconciles_to_the_config(node):
    cfg1 = make_config(node["ifname"], {"web": ["203.0.113.0/24"], "api": ["198.51.100.128/25"]})
    attach(node, cfg1)
    assert datapath.program(cfg1, node["pin_dir"])["prefixes_written"] == 2
    assert datapath.program(cfg1, node["pin_dir"])["prefixes_written"] == 0   # idempotent
    cfg2 = make_config(node["ifname"], {"web": ["203.0.113.0/25"]})
    counts = datapath.program(cfg2, node["pin_dir"])
    assert counts["prefixes_removed"] == 2 and counts["destinations_removed"] == 1
    with maps.Maps(node["pin_dir"]) as m:
        assert m.prefixes() == {"203.0.113.0/25": 1}
        assert m.dest_ids() == [1]


def test_missing_steer_interface_is_a_clear_error_and_attaches_nothing(node):
    cfg = make_config("nosuch0", {"web": ["203.0.113.0/24"]})
    with pytest.raises(datapath.DatapathError, match="nosuch0"):
        attach(node, cfg)
    assert not os.path.exists(node["pin_dir"])       # nothing compiled or pinned either


def test_maps_of_a_running_datapath_need_no_compiler(node):
    cfg = make_config(node["ifname"], {"web": ["203.0.113.0/24"]})
    attach(node, cfg)
    # A fresh interpreter writes and reads the pinned maps without importing bcc.
    code = ("import sys; from argoctl import maps; m = maps.Maps(sys.argv[1]); "
            "m.set_pathset(1, [maps.Path(1, 65536, 1)]); m.set_prefixes([('192.0.2.128/25', 1)]); "
            "assert 'bcc' not in sys.modules; print(m.prefixes())")
    out = subprocess.run([os.sys.executable, "-c", code, node["pin_dir"]], check=True,
                         capture_output=True, text=True, cwd=str(Path(__file__).resolve().parents[2])).stdout
    assert "'192.0.2.128/25': 1" in out


CONNECT = r"""
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_STREAM)
if len(sys.argv) > 3:
    s.setsockopt(socket.SOL_SOCKET, 36, int(sys.argv[3]))   # SO_MARK, as a probe sets it
s.settimeout(1)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError:
    pass   # nobody listens: the hook ran before the route lookup all the same
print(s.getsockopt(socket.SOL_SOCKET, 36))
"""


def test_local_sockets_get_the_paths_mark_by_destination(node, pair):
    """The cgroup hooks: a process in the hooked cgroup that connects to a
    steered destination carries that path's mark; others and probes don't change."""
    cfg = make_config(node["ifname"], {"b": ["192.0.2.2/32", "2001:db8::2/128"]})
    attach(node, cfg)
    with maps.Maps(node["pin_dir"]) as m:
        m.set_pathsets({1: [maps.Path(1, cfg.routing.mark(1), 1)]})
        m.set_prefixes([("192.0.2.2/32", 1), ("2001:db8::2/128", 1)])

    def connect_mark(dst, *extra):
        # Join the cgroup first (`ip netns exec` remounts /sys), then enter a's namespace.
        script = f'echo $$ > {node["cgroup"]}/cgroup.procs && exec "$@"'
        out = subprocess.run(["sh", "-c", script, "sh", "ip", "netns", "exec", node["netns"],
                              os.sys.executable, "-c", CONNECT, dst, "9", *extra],
                             check=True, capture_output=True, text=True, timeout=30).stdout
        return int(out.strip())

    assert connect_mark("192.0.2.2") == cfg.routing.mark(1)
    assert connect_mark("2001:db8::2") == cfg.routing.mark(1)
    assert connect_mark("192.0.2.65") == 0                        # not a destination
    probe = cfg.routing.mark(0) | 0x3
    assert connect_mark("192.0.2.2", str(probe)) == probe         # a probe keeps its mark
    with maps.Maps(node["pin_dir"]) as m:
        assert m.path_stats(1).sockets == 2 and m.path_stats(1).syns == 2


SENDTO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for dst in sys.argv[1:]:
    s.sendto(b"x", (dst, 9))
    print(s.getsockopt(socket.SOL_SOCKET, 36))
"""


def test_unconnected_udp_socket_follows_each_datagrams_destination(node):
    cfg = make_config(node["ifname"], {"b": ["192.0.2.2/32"]})
    attach(node, cfg)
    with maps.Maps(node["pin_dir"]) as m:
        m.set_pathsets({1: [maps.Path(1, cfg.routing.mark(1), 1)]})
        m.set_prefixes([("192.0.2.2/32", 1)])
    script = f'echo $$ > {node["cgroup"]}/cgroup.procs && exec "$@"'
    out = subprocess.run(["sh", "-c", script, "sh", "ip", "netns", "exec", node["netns"],
                          os.sys.executable, "-c", SENDTO, "192.0.2.2", "192.0.2.65", "192.0.2.2"],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    assert [int(x) for x in out.split()] == [cfg.routing.mark(1), 0, cfg.routing.mark(1)]
