"""Living beside other users of fwmarks and policy rules (in a namespace): `up`
refuses, naming the rule, when a foreign rule matches on bits of argoctl's mask;
the default mask leaves Tailscale's rules alone; `status` shows foreign rules in
argoctl's priority range."""

from __future__ import annotations

import json

import pytest

from argoctl import apply, config, plan

from test_reconcile import PEERLESS, argoctl, host, snap, up  # noqa: F401 (fixture)

TAILSCALE = "ip rule add priority 5270 fwmark 0x80000/0xff0000 lookup 52"


def test_default_mask_lives_beside_tailscale_and_refuses_a_rule_on_its_bits(host, tmp_path):
    host.run(["sh", "-ec", TAILSCALE], check=True)
    ctx = up(host)                        # Tailscale's bits are not ours: fine
    assert ctx.result.writes > 0
    apply.down(ns=host.netns, run_dir=host.run_dir)
    # a rule that matches marks inside 0x000000ff: refused, named, nothing changed
    host.run(["ip", "rule", "add", "priority", "100", "fwmark", "0x5/0xff", "lookup", "100"],
             check=True)
    before = snap(host)
    with pytest.raises(plan.PlanError) as e:
        up(host)
    assert "ip -4 rule: priority 100 fwmark 0x5/0xff lookup 100" in str(e.value)
    assert "fwmark_mask" in str(e.value)
    assert snap(host) == before
    # the same through the CLI: exit 1, the rule named, the host unchanged
    r = argoctl(host, "up", "-c", host.cfg_path)
    assert r.returncode == 1 and "priority 100 fwmark 0x5/0xff" in r.stderr
    assert snap(host) == before


def test_the_old_default_mask_would_collide_with_tailscale(host, tmp_path):
    host.run(["sh", "-ec", TAILSCALE], check=True)
    path = tmp_path / "old-mask.toml"
    path.write_text(PEERLESS + "[routing]\nfwmark_mask = 0x00ff0000\n")
    cfg = config.load(str(path))
    with pytest.raises(plan.PlanError, match=r"priority 5270 fwmark 0x80000/0xff0000 lookup 52"):
        apply.up(cfg, ns=host.netns, run_dir=host.run_dir)


def test_status_shows_foreign_rules_in_our_priority_range(host):
    up(host)
    r = argoctl(host, "status", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    # the fixture's user rule at 7205 sits in argoctl's range (7200..7454)
    assert data["foreign_rules"] == ["ip -4 rule: priority 7205 fwmark 0x50000/0xff0000 "
                                     "lookup 100"]
    assert data["mark_conflicts"] == []
    text = argoctl(host, "status").stdout
    assert "foreign rule in argoctl's priority range" in text and "7205" in text


def test_forwarding_keeps_a_slaac_interface_accepting_router_advertisements(host):
    """accept_ra=1 ignores RAs once forwarding is on (the default route learnt by
    SLAAC would expire): up raises it to 2 where it was 1, down puts 1 back, and an
    interface with its own other value is left alone."""
    host.run(["sh", "-ec", "ip link add ra0 type veth peer name ra1; "
              "sysctl -qw net.ipv6.conf.ra0.accept_ra=1 net.ipv6.conf.ra1.accept_ra=0 "
              "net.ipv6.conf.default.accept_ra=1"], check=True)

    def ra():
        out = host.run(["sysctl", "-n", "net.ipv6.conf.ra0.accept_ra",
                        "net.ipv6.conf.ra1.accept_ra", "net.ipv6.conf.default.accept_ra",
                        "net.ipv6.conf.all.forwarding"], check=True).stdout.split()
        return out
    assert ra() == ["1", "0", "1", "0"]
    up(host)
    assert ra() == ["2", "0", "2", "1"]
    apply.down(ns=host.netns, run_dir=host.run_dir)
    assert ra() == ["1", "0", "1", "0"]


def test_down_reports_json(host):
    up(host)
    r = argoctl(host, "down", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dry_run"] is False and out["removed"] == len(out["ops"]) >= 3
    assert {op["action"] for op in out["ops"]} == {"remove"}
