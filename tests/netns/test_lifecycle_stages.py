"""The one lifecycle (apply.py), on the host kernel in a namespace: a failure at any
stage of `up` and of `run`'s start-up -- the datapath attach and the first map
write included -- leaves the namespace exactly as it was: links, addresses, rules,
routes of all tables, the nft ruleset, tc qdiscs and filters, cgroup attachments
and bpffs pins. And a clsact qdisc argoctl added goes with `down`; one that was
there before stays.

A config without tunnels (the host kernel has none) still uses every stage: rules,
sysctls, the nft table, the compiled datapath on a steered interface, socket hooks
on a cgroup of the test's own, and the maps. Every bcc compile costs seconds, so
step-level failures are taken at the first step of each kind, not all of them."""

from __future__ import annotations

import json
import os

import pytest

from argoctl import apply, bpfsys, config, datapath, home, netlink
from argoctl import daemon as dmn

CONFIG = """\
[node]
name = "edge"
address = "192.0.2.1"
tunnel_address = "198.51.100.201"
steer_interfaces = ["to-b"]

[[destination]]
name = "origin"
prefixes = ["203.0.113.0/24", "2001:db8:f::/48"]
paths = ["direct"]
"""


@pytest.fixture
def node(pair, tmp_path):
    a = pair["a"]
    path = tmp_path / "edge.toml"
    path.write_text(CONFIG)
    a.cfg = config.load(str(path))
    a.run_dir = str(tmp_path / "run")
    root = datapath.cgroup2_root()
    a.cgroup = os.path.join(root, f"argoctl-test-lc{os.getpid()}")
    os.makedirs(a.cgroup, exist_ok=True)
    yield a
    try:
        apply.down(ns=a.netns, run_dir=a.run_dir, cgroup=a.cgroup)
    finally:
        os.rmdir(a.cgroup)
    assert not os.path.exists(home.pin_dir(a.netns))


def snap(h) -> dict:
    def j(*argv):
        return json.loads(h.run(list(argv), check=True).stdout or "[]")
    links = [l["ifname"] for l in j("ip", "-j", "link")]
    tc = {}
    for dev in links:
        tc[dev] = {"qdisc": j("tc", "-j", "qdisc", "show", "dev", dev),
                   "ingress": j("tc", "-j", "filter", "show", "dev", dev, "ingress"),
                   "egress": j("tc", "-j", "filter", "show", "dev", dev, "egress")}
    cg = os.open(h.cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        hooks = {n: bpfsys.prog_query(cg, t) for n, t in datapath.SOCK_PROGRAMS.items()}
    finally:
        os.close(cg)
    pins = sorted((e, tuple(sorted(os.listdir(os.path.join(home.BPFFS, e))))
                   if os.path.isdir(os.path.join(home.BPFFS, e)) else ())
                  for e in os.listdir(home.BPFFS) if e.startswith("argoctl-" + h.netns))
    return {"links": j("ip", "-j", "link"), "addrs": j("ip", "-j", "addr"),
            "r4": j("ip", "-j", "-4", "rule"), "r6": j("ip", "-j", "-6", "rule"),
            "rt4": j("ip", "-j", "-4", "route", "show", "table", "all"),
            "rt6": j("ip", "-j", "-6", "route", "show", "table", "all"),
            "nft": h.run(["nft", "list", "ruleset"], check=True).stdout,
            "tc": tc, "cgroup": hooks, "pins": pins,
            "pin_dir": os.path.exists(home.pin_dir(h.netns))}


def up(h, **kw):
    return apply.up(h.cfg, ns=h.netns, run_dir=h.run_dir, cgroup=h.cgroup, **kw)


def test_a_failure_at_every_stage_and_step_of_up_changes_nothing(node):
    pre = snap(node)
    for stage in apply.STAGE_NAMES:
        with pytest.raises(netlink.InjectedFailure, match=f"after stage {stage}"):
            up(node, fail_stage=stage)
        assert snap(node) == pre, f"fail_stage={stage}"
    ctx = up(node)                       # the whole way: every stage did something
    steps = ctx.log
    assert ctx.attach.compiled and ctx.attach.clsact_added == ["to-b"]
    assert sorted(ctx.attach.cgroup_attached) == sorted(datapath.SOCK_PROGRAMS)
    assert ctx.extra["maps"]["prefixes_written"] == 2
    full = snap(node)
    assert full["tc"]["to-b"]["ingress"] and full["pin_dir"] and all(full["cgroup"].values())
    apply.down(ns=node.netns, run_dir=node.run_dir, cgroup=node.cgroup)
    assert snap(node) == pre             # down: clsact qdisc, hooks and pins included
    # the first step of each kind of the datapath and maps stages, and the last
    kinds = {}
    first_dp = steps.index("load the datapath")
    for k, what in enumerate(steps[first_dp:], first_dp):
        kinds.setdefault(what.split()[0], k)
    picks = sorted(set(kinds.values()) | {len(steps) - 1})
    assert [steps[k].split()[0] for k in picks] == ["load", "clsact", "filter", "cgroup",
                                                    "first"] and len(picks) == 5
    for k in picks + [0]:
        with pytest.raises(netlink.InjectedFailure, match=f"before step {k}"):
            up(node, fail_at=k)
        assert snap(node) == pre, f"fail_at={k} ({steps[k]})"


def test_a_failure_at_every_stage_of_runs_start_up_changes_nothing(node, monkeypatch):
    pre = snap(node)
    for stage in apply.STAGE_NAMES:
        monkeypatch.setenv("ARGOCTL_FAIL_STAGE", stage)
        d = dmn.Daemon(node.cfg, dmn.Options(ns=node.netns, run_dir=node.run_dir,
                                             cgroup=node.cgroup, metrics_listen=""))
        with pytest.raises(netlink.InjectedFailure, match=f"after stage {stage}"):
            d.setup()
        assert snap(node) == pre, f"fail_stage={stage}"
        assert d.lock.fd is None         # and the lock is released
    monkeypatch.delenv("ARGOCTL_FAIL_STAGE")
    monkeypatch.setenv("ARGOCTL_FAIL_AT", "0")
    d = dmn.Daemon(node.cfg, dmn.Options(ns=node.netns, run_dir=node.run_dir,
                                         cgroup=node.cgroup, metrics_listen=""))
    with pytest.raises(netlink.InjectedFailure, match="before step 0"):
        d.setup()
    assert snap(node) == pre


def _steer_lan2_too(node) -> None:
    """A second steered device, lan2, made for the test (no clsact on it)."""
    node.run(["ip", "link", "add", "lan2", "type", "veth", "peer", "name", "lan2p"], check=True)
    cfg2 = CONFIG.replace('["to-b"]', '["to-b", "lan2"]')
    path = os.path.join(os.path.dirname(node.run_dir), "edge2.toml")
    with open(path, "w") as f:
        f.write(cfg2)
    node.cfg = config.load(path)


def test_down_removes_the_clsact_it_added_and_keeps_one_that_was_there(node):
    node.run(["tc", "qdisc", "add", "dev", "to-b", "clsact"], check=True)
    _steer_lan2_too(node)
    pre = snap(node)
    ctx = up(node)
    assert ctx.attach.clsact_added == ["lan2"]       # to-b had one: not argoctl's
    assert snap(node)["tc"]["lan2"]["ingress"]
    again = up(node)                                  # our filters are recognised in place
    assert again.attach.newly_attached == [] and again.attach.clsact_added == []
    apply.down(ns=node.netns, run_dir=node.run_dir, cgroup=node.cgroup)
    after = snap(node)
    assert after == pre
    assert any(q["kind"] == "clsact" for q in after["tc"]["to-b"]["qdisc"])
    assert not any(q["kind"] == "clsact" for q in after["tc"]["lan2"]["qdisc"])


def test_down_keeps_a_clsact_it_added_once_another_filter_uses_it(node):
    """A user's filter put on argoctl's clsact makes the qdisc theirs too: `down`
    removes argoctl's filter and forgets the qdisc, which stays with their filter."""
    _steer_lan2_too(node)
    ctx = up(node)
    assert "lan2" in ctx.attach.clsact_added
    node.run(["tc", "filter", "add", "dev", "lan2", "egress", "prio", "3", "bpf",
              "bytecode", "1,6 0 0 0,", "classid", "1"], check=True)     # (classic BPF)
    apply.down(ns=node.netns, run_dir=node.run_dir, cgroup=node.cgroup)
    after = snap(node)
    assert any(q["kind"] == "clsact" for q in after["tc"]["lan2"]["qdisc"])
    assert not after["tc"]["lan2"]["ingress"]              # argoctl's filter is gone
    assert [f.get("pref") for f in after["tc"]["lan2"]["egress"]][:1] == [3]   # theirs stays


RELAY_FIRST = CONFIG.replace('paths = ["direct"]', 'paths = ["relay1", "direct"]') + """
[[peer]]
name = "relay1"
address = "192.0.2.2"
tunnel = "gre"
tunnel_address = "198.51.100.202"
"""


def _steered(node, pair, cfg, n=20) -> dict:
    """n UDP packets from b through a's steered interface; the datapath's per-path
    counters say which path's mark they got."""
    import socket
    from argoctl import maps
    ids = [cfg.path_id(p) for p in cfg.destinations[0].paths]
    pin = home.pin_dir(node.netns)
    with maps.Maps(pin) as m:
        before = {i: m.path_stats(i).packets for i in ids}
    with pair["b"].inside():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(n):
            s.sendto(b"argoctl", ("203.0.113.10", 9))
        s.close()
    with maps.Maps(pin) as m:
        return {i: m.path_stats(i).packets - before[i] for i in ids}


def test_up_then_run_steer_relay1_direct_the_same_way(node, pair):
    """paths = ["relay1", "direct"]: `up` writes the first path set, and the daemon
    started on top of it steers the same way (one rule: config.first_weights). The
    host kernel has no GRE, so only the datapath's stages run here (the VM test in
    tests/integration/test_up_gre.py runs every stage over a real tunnel)."""
    import time
    from argoctl import maps
    path = os.path.join(os.path.dirname(node.run_dir), "relay-first.toml")
    with open(path, "w") as f:
        f.write(RELAY_FIRST)
    cfg = node.cfg = config.load(path)
    pair["b"].run(["ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.65"], check=True)
    up(node, stages=("datapath", "maps"))
    dest = cfg.destinations[0].id
    pin = home.pin_dir(node.netns)
    with maps.Maps(pin) as m:
        before_set = m.pathset(dest)[1]
    assert [(p.path_id, p.weight, p.up) for p in before_set] == [(1, 0, True), (0, 100, True)]
    before = _steered(node, pair, cfg)
    d = dmn.Daemon(cfg, dmn.Options(ns=node.netns, run_dir=node.run_dir, cgroup=node.cgroup,
                                    metrics_listen="", apply_config=False)).start_thread()
    try:
        end = time.monotonic() + 60
        while d.rounds < 3 and time.monotonic() < end:
            time.sleep(0.1)
        with maps.Maps(pin) as m:
            after_set = m.pathset(dest)[1]
        after = _steered(node, pair, cfg)
        assert d.rounds >= 3 and d.map_writes == 0, [r.to_dict() for r in d.history]
        assert d.choices() == {"origin": "direct"}
    finally:
        d.stop()
    assert after_set == before_set
    assert before == after == {1: 0, 0: 20}


def _killed_up(h, kill_at) -> bool:
    """`up` in a forked child (no interpreter start) that SIGKILLs itself at step
    `kill_at`; True if it was killed there."""
    pid = os.fork()
    if pid == 0:                                      # the child: never returns
        code = 0
        try:
            up(h, kill_at=kill_at)
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9


def test_up_killed_at_every_step_leaves_nothing_down_cannot_remove(node):
    """SIGKILL at every step of `up` (the clsact qdisc added, the filter not yet,
    included); then `down` restores the namespace exactly. Tunnels (a device created
    and not yet aliased) are in tests/integration/upcases.py, under the VM."""
    pre = snap(node)
    with pytest.raises(netlink.InjectedFailure) as e:
        up(node, fail_at=10 ** 6)
    steps = e.value.steps
    assert snap(node) == pre
    assert steps[-1] == "first map contents" and "clsact to-b" in steps
    for k, what in enumerate(steps):
        if what.startswith("cgroup") and not steps[k - 1].startswith("filter"):
            continue        # (one cgroup hook stands for the five: a compile each)
        assert _killed_up(node, k), f"kill_at={k} ({what}): not killed"
        left = snap(node) != pre
        assert left or k == 0, f"kill_at={k} ({what}) left nothing: the step did not run"
        apply.down(ns=node.netns, run_dir=node.run_dir, cgroup=node.cgroup)
        assert snap(node) == pre, f"kill_at={k} ({what})"


def _killed_after_clsact_journal(h) -> bool:
    """`up` in a forked child that SIGKILLs itself right after the intent journal
    records a clsact qdisc, before the request that adds it: the crash window."""
    from argoctl import intent
    pid = os.fork()
    if pid == 0:
        orig = intent.Intents.add_clsact

        def add_then_die(self, ifname, ifindex):
            orig(self, ifname, ifindex)
            os.kill(os.getpid(), 9)
        intent.Intents.add_clsact = add_then_die
        code = 0
        try:
            up(h)
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9


def _journal(h) -> dict:
    from argoctl import intent
    return intent.Intents(home.locate(h.netns, h.run_dir).state_dir).clsact()


def _has_clsact(snapshot, dev) -> bool:
    return any(q["kind"] == "clsact" for q in snapshot["tc"][dev]["qdisc"])


def test_up_killed_after_journaling_a_clsact_keeps_the_users_and_removes_its_own(node):
    """to-b has a user's (empty) clsact qdisc, lan2 none. An `up` killed between the
    journal and the qdisc request records only lan2 (a qdisc argoctl was about to
    create), so `down` leaves the user's on to-b; killed once argoctl's qdisc is on
    lan2 (before its filter), `down` removes it."""
    node.run(["tc", "qdisc", "add", "dev", "to-b", "clsact"], check=True)
    node.run(["ip", "link", "add", "lan2", "type", "veth", "peer", "name", "lan2p"], check=True)
    path = os.path.join(os.path.dirname(node.run_dir), "edge2.toml")
    with open(path, "w") as f:
        f.write(CONFIG.replace('["to-b"]', '["to-b", "lan2"]'))
    node.cfg = config.load(path)
    pre = snap(node)
    assert _has_clsact(pre, "to-b") and not _has_clsact(pre, "lan2")
    lan2 = pre["links"][[l["ifname"] for l in pre["links"]].index("lan2")]["ifindex"]

    assert _killed_after_clsact_journal(node)
    assert _journal(node) == {"lan2": lan2}          # never the user's to-b
    killed = snap(node)
    assert _has_clsact(killed, "to-b") and not _has_clsact(killed, "lan2")
    apply.down(ns=node.netns, run_dir=node.run_dir, cgroup=node.cgroup)
    after = snap(node)
    assert after == pre and _has_clsact(after, "to-b") and _journal(node) == {}

    assert _killed_up(node, "filter steer_eth lan2")  # argoctl's qdisc on lan2, no filter
    killed = snap(node)
    assert _has_clsact(killed, "lan2") and _journal(node) == {"lan2": lan2}
    apply.down(ns=node.netns, run_dir=node.run_dir, cgroup=node.cgroup)
    after = snap(node)
    assert after == pre and _has_clsact(after, "to-b") and not _has_clsact(after, "lan2")
    assert _journal(node) == {}
