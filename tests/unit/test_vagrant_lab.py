"""The smaller Vagrant lab `make vagrant-lab` boots (ARGOCTL_VMS=edge,relay1,origin
under TCG, docs/vagrant.md): the Vagrantfile keeps only the chosen VMs and the
links among them, checks its lab settings, and provisioning writes configs for
a lab with one relay. (The boot itself is `make vagrant-lab`: too long for CI.)"""

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from argoctl import config, keys
from argoctl.lab import configs as labconfig
from test_vagrant import DOC_RANGES, VAGRANTFILE, lab_config, vagrant
LAB3 = {"ARGOCTL_VMS": "edge,relay1,origin", "ARGOCTL_LIBVIRT_DRIVER": "qemu",
        "ARGOCTL_MGMT_NET": "192.0.2.192/26", "ARGOCTL_MEMORY": "edge=640,relay1=640,origin=384"}


def test_vagrant_lab_subset_validates_and_drops_absent_hosts(tmp_path):
    r = vagrant(tmp_path, "libvirt", **LAB3)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WARNING" not in (r.stdout + r.stderr).upper()
    env = dict(os.environ, **LAB3)
    out = subprocess.run(["ruby", str(VAGRANTFILE)], capture_output=True, text=True,
                         timeout=60, check=True, env=env).stdout
    plan = json.loads(out)
    assert set(plan["hosts"]) == {"edge", "relay1", "origin"}
    # Only links whose every end runs; the LAN becomes edge's namespaces.
    assert {l["name"] for l in plan["links"]} == {"edge-relay1", "edge-origin",
                                                  "relay1-origin", "origin-net"}
    for host, routes in plan["routes"].items():
        assert all("192.0.2.3/32" not in r for r in routes), (host, routes)   # relay2's lo
    # The management network stays inside the documentation ranges, clear of the lab's.
    mgmt = ipaddress.ip_network(LAB3["ARGOCTL_MGMT_NET"])
    assert any(mgmt.subnet_of(d) for d in DOC_RANGES)
    used = [ipaddress.ip_network(f"{a}/{l['prefix']}", strict=False)
            for l in plan["links"] for a in l["ends"].values()]
    assert not any(mgmt.overlaps(n) for n in used)


@pytest.mark.parametrize("bad, message", [
    ({"ARGOCTL_VMS": "edge,relay3,origin"}, "unknown host(s) relay3"),
    ({"ARGOCTL_VMS": "relay1,origin"}, "edge and origin are needed"),
    ({"ARGOCTL_MEMORY": "edge=lots"}, "ARGOCTL_MEMORY=edge=lots"),
    ({"ARGOCTL_LIBVIRT_DRIVER": "xen"}, "must be kvm or qemu"),
])
def test_vagrant_lab_settings_are_checked(tmp_path, bad, message):
    r = vagrant(tmp_path, "libvirt", **{**LAB3, **bad})
    assert r.returncode != 0 and message in r.stdout + r.stderr


@pytest.mark.parametrize("kind", labconfig.TUNNEL_KINDS)
def test_provisioning_a_lab_with_one_relay(tmp_path, kind, monkeypatch):
    """ARGOCTL_RELAYS=relay1: edge's config names only the relay that exists (a
    missing relay would be a path that never comes up) and fails over quickly."""
    monkeypatch.setenv("ARGOCTL_RELAYS", "relay1")
    dirs = {}
    for host in ("edge", "relay1", "origin"):
        d = tmp_path / host
        r = lab_config(host, kind, "lan0" if host == "edge" else "-", d)
        assert r.returncode == 0, r.stdout + r.stderr
        dirs[host] = d
    edge = config.load(str(dirs["edge"] / "argoctl.toml"))
    relay = config.load(str(dirs["relay1"] / "argoctl.toml"))
    assert [p.name for p in edge.peers] == ["relay1"]
    assert list(edge.destinations[0].paths) == ["direct", "relay1"]
    assert edge.node.steer_interfaces == ("lan0",)
    assert edge.policy.probe_interval_ms == 200
    assert [p.name for p in relay.peers] == ["edge"]
    assert (dirs["origin"] / "lab" / "keys" / "responder.key").read_bytes() == \
        Path(edge.policy.responder_key_file).read_bytes()
    if kind == "wireguard":
        assert edge.peer("relay1").public_key == keys.encode(
            keys.public_key(keys.read_private_key(relay.node.private_key_file)))
    monkeypatch.setenv("ARGOCTL_RELAYS", "relay9")
    r = lab_config("edge", kind, "lan0", tmp_path / "bad")
    assert r.returncode != 0 and "unknown relay(s) relay9" in r.stderr


def test_echo_unit_verifies_cleanly(tmp_path):
    """The origin's traffic target unit: systemd's checker finds nothing to say
    (run against this checkout's interpreter and script, as the VM's are absent)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (package systemd)"
    text = (VAGRANTFILE.parent / "argoctl-lab-echo.service").read_text()
    copy = tmp_path / "argoctl-lab-echo.service"
    copy.write_text(text.replace("/opt/argoctl/venv/bin/python", sys.executable)
                    .replace("/opt/argoctl/src/", str(VAGRANTFILE.parents[1]) + "/"))
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
