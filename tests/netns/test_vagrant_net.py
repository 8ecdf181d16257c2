"""The Vagrant lab's underlay, built in namespaces: the Vagrantfile's hosts and
links (read by running it with plain ruby) as namespaces and veth pairs, each
host set up by the very script provisioning installs (vagrant/lab-net.sh).
Every direct path and every tunnel endpoint must then be reachable, so the VMs
get the paths argoctl chooses between."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

VAGRANT_DIR = Path(__file__).parents[2] / "vagrant"
MESH = ("edge", "relay1", "relay2", "origin")


@pytest.fixture
def plan():
    ruby = shutil.which("ruby")
    assert ruby, "ruby is missing (it comes with vagrant)"
    r = subprocess.run([ruby, str(VAGRANT_DIR / "Vagrantfile")], capture_output=True,
                       text=True, timeout=60, check=True)
    return json.loads(r.stdout)


def lab_net_script(role: str, loopback: str | None, routes: list[str]) -> str:
    r = subprocess.run(["sh", str(VAGRANT_DIR / "lab-net.sh"), role, loopback or "-",
                        ",".join(routes)], capture_output=True, text=True, timeout=30, check=True)
    return r.stdout


def test_vagrant_underlay_has_every_direct_path(topo, plan):
    hosts, links, routes = plan["hosts"], plan["links"], plan["routes"]
    for name in hosts:
        topo.add_host(name)
    pairs = [link for link in links if len(link["ends"]) == 2]
    for link in pairs:
        a, b = link["ends"]
        topo.add_link(topo[a], topo[b])
    topo.start()
    for link in links:
        for name, addr in link["ends"].items():
            others = [o for o in link["ends"] if o != name]
            # A one-host network (origin's 203.0.113.0/24) is a NIC in the VM, lo here.
            dev = topo[name].ifname(topo[others[0]]) if others else "lo"
            plen = link["prefix"] if others else 32
            topo[name].run(["ip", "addr", "add", f"{addr}/{plen}", "dev", dev], check=True)
    for name, host in hosts.items():
        script = lab_net_script(host["role"], host.get("loopback"), routes[name])
        topo[name].run(["sh", "-ec", script], check=True)

    origin_server = next(l["ends"]["origin"] for l in links if list(l["ends"]) == ["origin"])
    client_addr = next(l["ends"]["client"] for l in links if "client" in l["ends"])
    # The client reaches the origin through edge, and the origin answers it.
    assert topo["client"].ping(origin_server)
    assert topo["origin"].ping(client_addr)
    # The direct path: edge and both relays reach the origin over their own link.
    for name in ("edge", "relay1", "relay2"):
        r = topo[name].run(["ip", "-o", "route", "get", origin_server], check=True)
        assert f"dev {topo[name].ifname(topo['origin'])} " in r.stdout, r.stdout
        assert topo[name].ping(origin_server)
    # Tunnel endpoints: every mesh node reaches every other's loopback from its own.
    for x in MESH:
        for y in MESH:
            if x != y:
                assert topo[x].ping(hosts[y]["loopback"], src=hosts[x]["loopback"]), (x, y)
