"""The lab's per-host configs: every host's file loads, the ends of every tunnel
agree (addresses, WireGuard keys and ports), output is deterministic, secrets
are 0600 and never printed."""

import dataclasses
import ipaddress
import os
import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from argoctl import config, keys, mac
from argoctl.lab import configs as labconfig
from argoctl.lab import topo
from argoctl.cli import cli

SEED = b"0123456789abcdef0123456789abcdef"


def gen(directory: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["lab", "gen-configs", "--out", str(directory), *args])
    assert result.exit_code == 0, result.output
    return result.output


def load_all(directory: Path) -> dict[str, config.Config]:
    return {p.stem: config.load(str(p)) for p in sorted(directory.glob("*.toml"))}


@pytest.mark.parametrize("kind", labconfig.TUNNEL_KINDS)
def test_every_host_config_loads_and_tunnel_ends_agree(tmp_path, kind):
    out = gen(tmp_path, "--tunnel", kind)
    cfgs = load_all(tmp_path)
    assert sorted(cfgs) == ["edge", "relay1", "relay2"]
    assert sorted(out.split()) == sorted(
        f for h in cfgs for f in (f"{h}:", str(tmp_path / f"{h}.toml")))

    edge = cfgs["edge"]
    assert [p.name for p in edge.peers] == ["relay1", "relay2"]
    assert [p.id for p in edge.peers] == [1, 2]
    assert edge.node.relay is False and edge.node.steer_interfaces == ("to-client",)
    (dest,) = edge.destinations
    assert dest.name == "origin" and dest.paths == ("direct", "relay1", "relay2")
    assert dest.prefixes == (ipaddress.ip_network("203.0.113.0/24"),
                             ipaddress.ip_network("2001:db8:f::/48"))
    assert (dest.probe.kind, str(dest.probe.target), dest.probe.port) == ("udp", "203.0.113.10", 7447)
    mac.read_key(edge.policy.responder_key_file)  # the key the origin's responder is given

    for relay in ("relay1", "relay2"):
        r = cfgs[relay]
        assert r.node.relay is True and r.destinations == () and r.node.steer_interfaces == ()
        (back,) = r.peers
        mine = edge.peer(relay)
        # Each end's peer entry names the other end's underlay and overlay address.
        assert (back.name, back.address, back.tunnel_address) == \
            ("edge", edge.node.address, edge.node.tunnel_address)
        assert (mine.address, mine.tunnel_address) == (r.node.address, r.node.tunnel_address)
        assert mine.tunnel == back.tunnel == kind
        if kind == "wireguard":
            # Public keys are the other end's private key's; ports cross over.
            assert mine.public_key == keys.encode(keys.public_key(
                keys.read_private_key(r.node.private_key_file)))
            assert back.public_key == keys.encode(keys.public_key(
                keys.read_private_key(edge.node.private_key_file)))
            assert (mine.listen_port, mine.port) == (back.port, back.listen_port)
        else:
            assert r.node.private_key_file is None and mine.public_key is None


def test_addresses_come_from_the_namespace_lab():
    lab = labconfig.default_topology("netns")
    for h in lab.hosts:
        assert h.address == topo.UNDERLAY[h.name][0]
        assert ipaddress.ip_address(h.tunnel_address) in ipaddress.ip_network("198.51.100.128/25")
    assert lab.origin_prefixes == topo.ORIGIN_PREFIX
    assert lab.origin_target == topo.ORIGIN_SERVER[0]
    # The steered interface is the edge's end of its link to the client.
    t = topo.Topology.default(prefix="agx")
    assert t["edge"].ifname(t["client"]) == lab.edge.lan_interface
    vagrant = labconfig.default_topology("vagrant")
    assert [h.address for h in vagrant.hosts] == [h.address for h in lab.hosts]
    assert vagrant.origin_prefixes == ("203.0.113.0/24",)   # the VM lab is IPv4-only


def test_wireguard_ports_distinct_per_host(tmp_path):
    gen(tmp_path, "--tunnel", "wireguard")
    for cfg in load_all(tmp_path).values():
        ports = [p.listen_port for p in cfg.peers]
        assert len(set(ports)) == len(ports)


@pytest.mark.parametrize("kind", labconfig.TUNNEL_KINDS)
def test_regenerating_gives_identical_bytes(tmp_path, kind):
    gen(tmp_path, "--tunnel", kind)
    first = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    gen(tmp_path, "--tunnel", kind)
    second = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert first == second


def test_render_is_pure_and_deterministic(tmp_path):
    lab = labconfig.default_topology("netns")
    kf = labconfig.KeyFiles(str(tmp_path))
    pub = {h.name: keys.encode(bytes([i]) * 32) for i, h in enumerate(lab.hosts)}
    a = labconfig.render_config(lab, "edge", "wireguard", kf, pub)
    assert a == labconfig.render_config(lab, "edge", "wireguard", kf, dict(pub))
    assert list(tmp_path.iterdir()) == []          # rendering writes nothing
    tomllib.loads(a)


def test_seed_makes_separately_provisioned_hosts_agree(tmp_path):
    """As on the VMs: each host generated alone, in its own directory, from the seed."""
    seed = tmp_path / "seed"
    seed.write_bytes(SEED)
    seed.chmod(0o600)
    cfgs = {}
    for host in ("edge", "relay1", "relay2", "origin"):
        gen(tmp_path / host, "--tunnel", "wireguard", "--underlay", "vagrant",
            "--host", host, "--seed-file", str(seed))
        written = sorted(p.name for p in (tmp_path / host).glob("*.toml"))
        assert written == ([] if host == "origin" else [f"{host}.toml"])
        if host != "origin":
            cfgs[host] = config.load(str(tmp_path / host / f"{host}.toml"))
    for relay in ("relay1", "relay2"):
        assert cfgs["edge"].peer(relay).public_key == keys.encode(keys.public_key(
            keys.read_private_key(cfgs[relay].node.private_key_file)))
        assert cfgs[relay].peer("edge").public_key == keys.encode(keys.public_key(
            keys.read_private_key(cfgs["edge"].node.private_key_file)))
        # A host gets its own private key only.
        assert not (tmp_path / relay / "keys" / "edge.key").exists()
    # The origin's responder key is the one the edge probes with.
    assert (tmp_path / "origin" / "keys" / "responder.key").read_bytes() == \
        Path(cfgs["edge"].policy.responder_key_file).read_bytes()


def test_different_seeds_give_different_keys(tmp_path):
    pubs = []
    for i, text in enumerate((SEED, SEED[::-1])):
        seed = tmp_path / f"seed{i}"
        seed.write_bytes(text)
        seed.chmod(0o600)
        gen(tmp_path / str(i), "--tunnel", "wireguard", "--host", "edge", "--seed-file", str(seed))
        pubs.append((tmp_path / str(i) / "keys" / "edge.pub").read_text())
    assert pubs[0] != pubs[1]


def test_secrets_are_0600_and_never_printed(tmp_path):
    out = gen(tmp_path, "--tunnel", "wireguard")
    secrets = [tmp_path / "keys" / f"{h}.key" for h in ("edge", "relay1", "relay2")]
    secrets.append(tmp_path / "keys" / "responder.key")
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.read_text().strip() not in out
    for path in tmp_path.glob("*.toml"):
        text = path.read_text()
        assert all(s.read_text().strip() not in text for s in secrets)


def test_existing_keys_are_reused(tmp_path):
    (tmp_path / "keys").mkdir()
    keys.write_key_pair(str(tmp_path / "keys" / "relay1.key"))
    mine = keys.encode(keys.public_key(keys.read_private_key(str(tmp_path / "keys" / "relay1.key"))))
    gen(tmp_path, "--tunnel", "wireguard")
    assert load_all(tmp_path)["edge"].peer("relay1").public_key == mine


def test_lan_interface_override(tmp_path):
    gen(tmp_path, "--underlay", "vagrant", "--lan-interface", "ens7")
    assert load_all(tmp_path)["edge"].node.steer_interfaces == ("ens7",)


@pytest.mark.parametrize("args, message", [
    (["--host", "nosuch"], "unknown lab host 'nosuch'"),
    (["--host", "relay1", "--tunnel", "wireguard"], "no WireGuard key for edge"),
    (["--tunnel", "ipip"], "Invalid value for '--tunnel'"),
])
def test_bad_requests_fail_clearly_and_write_no_config(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["lab", "gen-configs", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert not (tmp_path / "o").exists()


def test_open_seed_file_is_refused(tmp_path):
    seed = tmp_path / "seed"
    seed.write_bytes(SEED)
    seed.chmod(0o644)
    result = CliRunner().invoke(cli, ["lab", "gen-configs", "--out", str(tmp_path / "o"),
                                      "--seed-file", str(seed)])
    assert result.exit_code != 0 and "chmod 600" in result.output
    assert not (tmp_path / "o").exists()


def test_short_seed_is_refused(tmp_path):
    seed = tmp_path / "seed"
    seed.write_bytes(b"short")
    os.chmod(seed, 0o600)
    result = CliRunner().invoke(cli, ["lab", "gen-configs", "--out", str(tmp_path / "o"),
                                      "--seed-file", str(seed)])
    assert result.exit_code != 0 and "at least 16" in result.output


def test_policy_overrides_reach_the_edge_config(tmp_path):
    lab = dataclasses.replace(labconfig.default_topology(),
                              policy=(("probe_interval_ms", 100), ("split", True)))
    labconfig.write_lab_configs(str(tmp_path), lab)
    cfgs = load_all(tmp_path)
    assert cfgs["edge"].policy.probe_interval_ms == 100 and cfgs["edge"].policy.split is True
    assert cfgs["relay1"].policy == config.Policy()


def test_mixed_tunnels_relay1_gre_relay2_wireguard(tmp_path):
    """The demo's fleet scenario: one relay over GRE, the other over WireGuard;
    both ends of each tunnel agree on its kind, keys only where WireGuard is."""
    lab = dataclasses.replace(labconfig.default_topology("netns"),
                              tunnels=(("relay2", "wireguard"),))
    paths = labconfig.write_lab_configs(str(tmp_path), lab, "gre")
    cfgs = {h: config.load(p) for h, p in paths.items()}
    edge = cfgs["edge"]
    assert {p.name: p.tunnel for p in edge.peers} == {"relay1": "gre", "relay2": "wireguard"}
    assert [p.tunnel for p in cfgs["relay1"].peers] == ["gre"]
    assert [p.tunnel for p in cfgs["relay2"].peers] == ["wireguard"]
    assert edge.node.private_key_file and cfgs["relay2"].node.private_key_file
    assert not cfgs["relay1"].node.private_key_file
    assert edge.peer("relay2").public_key == keys.encode(keys.public_key(
        keys.read_private_key(cfgs["relay2"].node.private_key_file)))
    assert cfgs["relay2"].peers[0].public_key == keys.encode(keys.public_key(
        keys.read_private_key(edge.node.private_key_file)))
    with pytest.raises(ValueError, match="unknown tunnel kind 'vxlan'"):
        labconfig.write_lab_configs(str(tmp_path), dataclasses.replace(
            lab, tunnels=(("relay1", "vxlan"),)), "gre")


def test_fleet_lab_origins_are_separate_destinations_of_one_host(tmp_path):
    """The fleet bench's shape (argoctl/lab/fleet.py, origins=4): every host gets
    one destination per origin, non-overlapping prefixes each holding its own
    responder address, the first still the lab's usual server; edges have every
    path to each, relays their direct leg."""
    from argoctl.lab import fleet
    es, rs = fleet.host_names(2, 2)
    paths = labconfig.write_lab_configs(str(tmp_path), fleet.lab_topology(
        es, rs, fleet.POLICY, {}, origins=4), "gre")
    cfgs = {h: config.load(p) for h, p in paths.items()}
    edge, relay = cfgs["e1"], cfgs["r1"]
    assert [d.name for d in edge.destinations] == ["origin", "origin2", "origin3", "origin4"]
    nets = [ipaddress.ip_network(d.prefixes[0]) for d in edge.destinations]
    targets = [ipaddress.ip_address(str(d.probe.target)) for d in edge.destinations]
    assert all(t in n for t, n in zip(targets, nets))
    assert str(targets[0]) == topo.ORIGIN_SERVER[0]
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
    assert all(n.subnet_of(ipaddress.ip_network(topo.ORIGIN_PREFIX[0])) for n in nets)
    assert all(d.paths == ("direct", "r1", "r2") for d in edge.destinations)
    assert [d.paths for d in relay.destinations] == [("direct",)] * 4
    # one origin: the lab's usual destination, unchanged
    one = fleet.origin_destinations(1)
    assert one == [("origin", (topo.ORIGIN_PREFIX[0],), topo.ORIGIN_SERVER[0])]
    with pytest.raises(topo.TopologyError, match="origins: 5"):
        fleet.origin_destinations(5)
