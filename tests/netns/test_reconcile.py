"""Reconcile on the host kernel, in a namespace: the parts of `up`/`down` that need no
tunnel device (the host kernel has neither GRE nor WireGuard). A node without peers
still owns real state: the direct path's rules (IPv4 and IPv6), the nft table and the
forwarding sysctls. Tunnels, routes through them and traffic are in tests/integration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from argoctl import apply, config, netlink, plan

PEERLESS = """\
[node]
name = "edge"
address = "192.0.2.1"
tunnel_address = "198.51.100.201"
"""


@pytest.fixture
def host(topo, tmp_path):
    h = topo.add_host("h", loopback="192.0.2.1", loopback6="2001:db8::1")
    topo.start()
    # Start from forwarding off so a restored prior value is visible as such.
    h.sysctl({"net/ipv4/ip_forward": 0, "net/ipv6/conf/all/forwarding": 0})
    h.run(["sh", "-ec", """
ip rule add priority 7205 fwmark 0x50000/0xff0000 lookup 100
ip route add 203.0.113.0/24 dev lo table 7201 proto static
nft add table inet usertable
"""], check=True)
    path = tmp_path / "edge.toml"
    path.write_text(PEERLESS)
    h.cfg = config.load(str(path))
    h.cfg_path = str(path)
    h.run_dir = str(tmp_path / "run")
    _settle(h)
    return h


def _settle(h, tries=20):
    """Wait until the kernel's own follow-ups of the set-up (IPv6 lo routes) are done."""
    import time
    last = None
    for _ in range(tries):
        now = snap(h)
        if now == last:
            return
        last = now
        time.sleep(0.1)


def snap(h) -> dict:
    def j(*argv):
        return json.loads(h.run(["ip", "-j", *argv], check=True).stdout or "[]")
    return {"links": j("link"), "addrs": j("addr"), "r4": j("-4", "rule"), "r6": j("-6", "rule"),
            "rt4": j("-4", "route", "show", "table", "all"),
            "rt6": j("-6", "route", "show", "table", "all"),
            "nft": h.run(["nft", "list", "ruleset"], check=True).stdout,
            "sysctl": h.run(["sysctl", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"],
                            check=True).stdout}


def up(h, **kw):
    # The kernel-object stages only: the datapath's are in test_lifecycle_stages.py
    # (a compile per call would make the step-by-step loops here slow).
    return apply.up(h.cfg, ns=h.netns, run_dir=h.run_dir, stages=("links", "nft"), **kw)


def test_up_is_idempotent_and_down_restores_everything(host):
    pre = snap(host)
    # accept_ra 1 -> 2 where forwarding would make it ignore RAs (test_marks.py)
    ra1 = host.run(["sh", "-c", "grep -lx 1 /proc/sys/net/ipv6/conf/*/accept_ra | "
                    "grep -vc /all/"]).stdout.strip()
    ctx = up(host)
    assert [type(op.obj).__name__ for op in ctx.ops] == ["Rule", "Rule", "Nft", "Sysctl", "Sysctl"]
    assert ctx.result.writes == 5 + int(ra1)
    rules = host.run(["ip", "rule"], check=True).stdout
    assert "7200:\tfrom all fwmark 0xff/0xff lookup main" in rules
    assert "7205:\tfrom all fwmark 0x50000/0xff0000 lookup 100" in rules   # the user's, kept
    assert "table inet argoctl" in host.run(["nft", "list", "tables"], check=True).stdout
    assert host.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    again = up(host)
    assert again.ops == [] and again.result.writes == 0
    gone = apply.down(ns=host.netns, run_dir=host.run_dir)
    assert gone.result.writes == 5 + int(ra1)
    assert snap(host) == pre          # forwarding back to 0, user rule/route/table intact


def test_down_gives_devices_back_their_own_forwarding_settings(host):
    """The kernel copies a global forwarding write onto every device: `down` must not
    leave the user's per-device choices flattened to the global value."""
    knobs = ["net.ipv4.conf.lo.forwarding", "net.ipv6.conf.lo.forwarding",
             "net.ipv4.conf.default.forwarding", "net.ipv4.ip_forward",
             "net.ipv6.conf.all.forwarding"]

    def values():
        out = host.run(["sysctl", "-n", *knobs], check=True).stdout.split()
        return dict(zip(knobs, out))
    host.run(["sysctl", "-qw", "net.ipv4.conf.lo.forwarding=1",
              "net.ipv6.conf.lo.forwarding=1"], check=True)
    pre = values()
    assert pre == dict(zip(knobs, "11000"))
    up(host)
    assert values() == dict(zip(knobs, "11111"))       # the kernel's propagation
    apply.down(ns=host.netns, run_dir=host.run_dir)
    assert values() == pre


def test_drift_in_rules_nft_and_sysctl_is_restored_exactly(host):
    up(host)
    host.run(["sh", "-ec", """
ip -6 rule del priority 7200
nft delete rule inet argoctl forward handle $(nft -a list chain inet argoctl forward | awk '/handle/ && /oifname/ {print $NF; exit}')
sysctl -qw net.ipv4.ip_forward=0
"""], check=True)
    ctx = up(host)
    got = sorted(f"{op.action} {type(op.obj).__name__}" for op in ctx.ops)
    assert got == ["add Rule", "change Nft", "change Sysctl"]
    assert ctx.result.writes == 3
    assert up(host).result.writes == 0
    forward = host.run(["nft", "list", "chain", "inet", "argoctl", "forward"], check=True).stdout
    assert forward.count("maxseg size set rt mtu") == 2


def test_failure_at_every_step_restores_the_prior_state(host):
    pre = snap(host)
    n = len(up(host, dry_run=True).ops)
    for k in range(n + 1):
        with pytest.raises(netlink.InjectedFailure):
            up(host, fail_at=k)
        assert snap(host) == pre, f"fail_at={k}"
    assert not os.path.exists(os.path.join(netlink.state_dir(host.netns, host.run_dir),
                                           "saved-sysctls.json"))


def test_failure_while_changing_restores_the_drifted_state(host):
    """Rollback returns to the state before *this* up, drift included."""
    up(host)
    host.run(["ip", "rule", "del", "priority", "7200"], check=True)
    host.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"], check=True)
    host.run(["nft", "flush", "chain", "inet", "argoctl", "postrouting"], check=True)
    drifted = snap(host)
    n = len(up(host, dry_run=True).ops)
    assert n == 3                     # rule, nft table (rebuilt from its listing), sysctl
    for k in range(n + 1):
        with pytest.raises(netlink.InjectedFailure):
            up(host, fail_at=k)
        assert snap(host) == drifted, f"fail_at={k}"


def argoctl(h, *args, env=None):
    e = dict(os.environ, ARGOCTL_RUN_DIR=h.run_dir, **(env or {}))
    return subprocess.run(["ip", "netns", "exec", h.netns, sys.executable, "-m", "argoctl",
                           *args], capture_output=True, text=True, env=e, timeout=60)


def test_cli_dry_run_up_status_down_without_config(host):
    pre = snap(host)
    r = argoctl(host, "up", "-c", host.cfg_path, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "+ add    rule -4 priority 7200 fwmark 0xff/0xff lookup main" in r.stdout
    assert "nothing applied" in r.stdout
    assert snap(host) == pre
    r = argoctl(host, "up", "-c", host.cfg_path, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["writes"] - json.loads(r.stdout)["sysctl_writes"] == 3
    r = argoctl(host, "up", "-c", host.cfg_path)
    assert r.returncode == 0 and "up to date: 0 writes" in r.stdout
    r = argoctl(host, "status", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    direct = data["paths"][0]
    assert (direct["path"], direct["mark"], direct["rule4"], direct["rule6"]) == (
        "direct", "0xff", True, True)
    assert data["nft"]["rules"] == {"prerouting": 0, "forward": 2, "postrouting": 1}
    r = argoctl(host, "status")
    assert r.returncode == 0 and "paths" in r.stdout and "direct" in r.stdout
    os.unlink(host.cfg_path)                       # down needs no config
    r = argoctl(host, "down")
    assert r.returncode == 0, r.stderr
    assert snap(host) == pre


def test_cli_failure_is_exit_1_with_message_and_no_change(host):
    pre = snap(host)
    r = argoctl(host, "up", "-c", host.cfg_path, env={"ARGOCTL_FAIL_AT": "3"})
    assert r.returncode == 1
    assert "injected failure before step 3" in r.stderr and "host unchanged" in r.stderr
    assert snap(host) == pre


def test_cli_config_error_is_exit_2_and_no_change(host, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(PEERLESS.replace('"192.0.2.1"', '"192.0.2.300"'))
    pre = snap(host)
    r = argoctl(host, "up", "-c", str(bad))
    assert r.returncode == 2
    assert f"{bad}:3:" in r.stderr
    assert snap(host) == pre


def test_failing_tunnel_link_leaves_nothing_behind(host, tmp_path):
    """A user's own link already holds the tunnel's name (no argoctl alias, so not
    ours): creating ag-relay1 fails on any kernel (EEXIST, or no GRE at all), and up
    must leave nothing behind — the user's link included."""
    host.run(["ip", "link", "add", "ag-relay1", "type", "veth", "peer", "name", "usr-peer"],
             check=True)
    path = tmp_path / "gre.toml"
    path.write_text(PEERLESS + """
[[peer]]
name = "relay1"
address = "192.0.2.2"
tunnel = "gre"
tunnel_address = "198.51.100.202"
mtu = 1400
""")
    cfg = config.load(str(path))
    pre = snap(host)
    with pytest.raises(netlink.ApplyError, match="link ag-relay1"):
        apply.up(cfg, ns=host.netns, run_dir=host.run_dir)
    assert snap(host) == pre


def test_plan_error_when_no_underlay_route(host, tmp_path):
    path = tmp_path / "gre.toml"
    path.write_text(PEERLESS + """
[[peer]]
name = "relay1"
address = "203.0.113.99"
tunnel = "gre"
tunnel_address = "198.51.100.202"
""")
    cfg = config.load(str(path))
    pre = snap(host)
    with pytest.raises(plan.PlanError, match="no underlay route to peer address 203.0.113.99"):
        apply.up(cfg, ns=host.netns, run_dir=host.run_dir)
    assert snap(host) == pre


def test_drop_route_and_rule_are_made_read_back_and_drop_marked_traffic(host, tmp_path):
    """The objects that keep marked traffic out of main (a peer table's blackhole
    under its tunnel route, `not fwmark 0/MASK blackhole` after every path's rule)
    through the same Applier and read_owned as `up`, on the real kernel. The
    tunnel itself needs GRE (tests/integration/test_truthful.py)."""
    from pyroute2 import IPRoute
    from argoctl import names
    r = host.cfg.routing
    drops = [plan.Route(f, r.table(1), "default", "", "blackhole", names.DROP_METRIC)
             for f in (4, 6)] + \
            [plan.Rule(f, r.priority(names.DROP_RULE_OFFSET), 0, r.fwmark_mask, 0, "blackhole")
             for f in (4, 6)]
    host.run(["ip", "rule", "add", "priority", str(r.priority(0)), "fwmark",
              f"{r.mark(0):#x}/{r.fwmark_mask:#x}", "lookup", "main"], check=True)

    def owned():
        with host.inside(), IPRoute() as ipr:
            st = netlink.read_owned(ipr, r)
        return {o for o in (*st.routes, *st.rules) if o in drops}

    def route_get(mark):
        return host.run(["ip", "-4", "route", "get", "203.0.113.5", "mark", hex(mark)])

    def apply_ops(action):
        with host.inside(), IPRoute() as ipr:
            a = netlink.Applier(ipr, None, None, netlink.Saved(str(tmp_path)))
            a.apply([plan.Op(action, o) for o in drops])
    host.run(["ip", "route", "add", "203.0.113.0/24", "dev", "lo"], check=True)
    assert route_get(r.mark(1)).returncode == 0          # before: relay1's mark falls to main
    apply_ops("add")
    assert owned() == set(drops)
    out = host.run(["ip", "-4", "route", "show", "table", str(r.table(1))], check=True).stdout
    assert "blackhole default" in out and "proto 176" in out, out
    # relay1's mark, its own rule and tunnel route absent: dropped, never main
    assert route_get(r.mark(1)).returncode != 0
    for mark in (0, r.mark(0)):                          # unmarked and direct: main
        got = route_get(mark)
        assert got.returncode == 0 and "dev lo" in got.stdout, got
    apply_ops("remove")
    assert owned() == set() and route_get(r.mark(1)).returncode == 0
