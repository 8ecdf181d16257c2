"""The generated lab configs (argoctl/lab/configs.py) work on the namespace lab:
after `up` on edge, relay1 and relay2 every tunnel carries traffic both ways
(both ends agree on addresses, and for WireGuard on keys and ports), and a
packet carrying a relay path's mark reaches the origin through that relay."""

import pytest

from argoctl import apply, config
from argoctl.lab import configs as labconfig
from argoctl.config import Routing

HOSTS = ("edge", "relay1", "relay2")


@pytest.mark.parametrize("kind", labconfig.TUNNEL_KINDS)
def test_generated_configs_bring_up_working_tunnels(lab_module, tmp_path, kind):
    lab = labconfig.default_topology("netns")
    paths = labconfig.write_lab_configs(str(tmp_path / "etc"), lab, kind)
    cfgs = {h: config.load(paths[h]) for h in HOSTS}
    run_dir = {h: str(tmp_path / "run" / h) for h in HOSTS}
    done = []
    try:
        for h in HOSTS:
            # the kernel objects (the lab's tunnels and rules); no datapath compile per host
            apply.up(cfgs[h], ns=lab_module[h].netns, run_dir=run_dir[h], stages=("links", "nft"))
            done.append(h)
        edge = lab_module["edge"]
        for relay in lab.relays:
            assert edge.ping(relay.tunnel_address, count=3, timeout=3), (kind, relay.name)
            assert lab_module[relay.name].ping(lab.edge.tunnel_address, count=3, timeout=3)
            mark = Routing().mark(cfgs["edge"].peer(relay.name).id)
            with lab_module[relay.name].ipr() as ipr:
                dev = ipr.link_lookup(ifname="ag-edge")[0]
                before = ipr.get_links(dev)[0].get_attr("IFLA_STATS64")["rx_packets"]
            r = edge.run(["ping", "-n", "-q", "-c", "3", "-W", "3", "-m", str(mark),
                          lab.origin_target])
            assert r.returncode == 0, (kind, relay.name, r.stdout, r.stderr)
            with lab_module[relay.name].ipr() as ipr:
                after = ipr.get_links(dev)[0].get_attr("IFLA_STATS64")["rx_packets"]
            assert after - before >= 3, (kind, relay.name)   # it went through that relay
    finally:
        for h in reversed(done):
            apply.down(ns=lab_module[h].netns, run_dir=run_dir[h])
