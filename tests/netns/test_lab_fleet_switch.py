"""The demo lab's switch into fleet mode and back (LabEnv.set_fleet, host kernel,
stand-in paths): the relays' datapaths are compiled side by side by processes of
their own before the relays' daemons start, and the daemons adopt them; leaving
fleet mode detaches and unpins them at once (not only at stop); switching on
again compiles afresh; stop() leaves no namespace and no pin."""

from __future__ import annotations

import os

from argoctl import home
from argoctl.hooks import _our_filters
from argoctl.lab import topo
from argoctl.lab.configs import RELAYS
from argoctl.lab.env import LabEnv

from argoctl_fixtures import new_prefix


def _relay_datapaths(env: LabEnv) -> dict:
    """Per relay: its pins (None: no pin directory) and its tc filters by device."""
    out = {}
    for r in RELAYS:
        host = env.topo[r]
        pin_dir = home.pin_dir(host.netns)
        with host.ipr() as ipr:
            filters = {link.get_attr("IFLA_IFNAME"): _our_filters(ipr, link["index"])
                       for link in ipr.get_links()}
        out[r] = {"pins": sorted(os.listdir(pin_dir)) if os.path.isdir(pin_dir) else None,
                  "filters": {dev: f for dev, f in filters.items() if f}}
    return out


def test_fleet_switch_compiles_relays_ahead_and_leaving_removes_them(stale_namespaces_removed):
    prefix = new_prefix()
    env = LabEnv(prefix=prefix, tunnels="none")
    nothing = {r: {"pins": None, "filters": {}} for r in RELAYS}
    try:
        env.start()
        assert _relay_datapaths(env) == nothing

        env.set_fleet(True)
        assert env.relay_datapaths == {"relay1": "adopted", "relay2": "adopted"}, env.timings
        assert 0 < env.timings["relay_compile_s"] <= env.timings["relay_agents_s"], env.timings
        on = _relay_datapaths(env)
        for r in RELAYS:
            assert on[r]["pins"] and on[r]["filters"], on     # each relay's own datapath
        assert on["relay1"]["filters"] != on["relay2"]["filters"], on   # two programs

        env.set_fleet(False)
        assert _relay_datapaths(env) == nothing
        assert env.daemon.fleet is None

        env.set_fleet(True)                   # pins gone: compiled again, adopted again
        assert env.relay_datapaths == {"relay1": "adopted", "relay2": "adopted"}, env.timings
    finally:
        env.stop()
    assert not [n for n in topo.list_namespaces() if n.startswith(f"{prefix}-")]
    assert not [p for p in os.listdir("/sys/fs/bpf") if p.startswith(f"argoctl-{prefix}-")]
