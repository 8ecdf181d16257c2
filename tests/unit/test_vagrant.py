"""The Vagrant lab, as far as this machine allows: `vagrant validate` for both
providers (offline, no box), the Vagrantfile's network plan agrees with the
namespace lab and argoctl/lab/configs.py, and the provisioning's config step
writes configs that `argoctl validate` accepts, for GRE and WireGuard.

Needs Debian's `vagrant` package (with vagrant-libvirt, which it recommends);
`make setup` installs it. Without it these tests fail, by design."""

import ipaddress
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from argoctl import config, keys
from argoctl.lab import configs as labconfig
from argoctl.lab import topo
from argoctl.cli import cli

VAGRANT_DIR = Path(__file__).parents[2] / "vagrant"
VAGRANTFILE = VAGRANT_DIR / "Vagrantfile"
DOC_RANGES = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
MESH = ("edge", "relay1", "relay2", "origin")
SEED = "5eed" * 16

# VirtualBox is not installed here. Vagrant only asks VBoxManage for its
# version before validating the VirtualBox provider's settings; this answers
# that and nothing else, so the provider block is really checked.
FAKE_VBOXMANAGE = """#!/bin/sh
case "$1" in --version) echo 7.0.14r161095 ;; *) echo "not VirtualBox" >&2; exit 1 ;; esac
"""


def vagrant(tmp_path: Path, provider: str, cwd: Path = VAGRANT_DIR, *args: str, **extra_env):
    binary = shutil.which("vagrant")
    assert binary, "vagrant is not installed (apt-get install vagrant; `make setup` does it)"
    env = dict(os.environ,
               VAGRANT_HOME=str(tmp_path / "vagrant.d"),          # no state in ~/.vagrant.d
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dotfile"),    # nor in the repo
               VAGRANT_CHECKPOINT_DISABLE="1",                    # no network
               VAGRANT_DEFAULT_PROVIDER=provider, **extra_env)
    if provider == "virtualbox":
        fake = tmp_path / "bin"
        fake.mkdir(exist_ok=True)
        (fake / "VBoxManage").write_text(FAKE_VBOXMANAGE)
        (fake / "VBoxManage").chmod(0o755)
        env["PATH"] = f"{fake}:{env['PATH']}"
    return subprocess.run([binary, "validate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
def test_vagrant_validate_passes(tmp_path, provider):
    r = vagrant(tmp_path, provider)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated successfully" in r.stdout
    # Nothing a user would read as a problem (e.g. Vagrant's ".1 address" warning).
    assert "WARNING" not in (r.stdout + r.stderr).upper()


def test_vagrant_tunnel_choice(tmp_path):
    r = vagrant(tmp_path, "libvirt", ARGOCTL_TUNNEL="wireguard")
    assert r.returncode == 0, r.stdout + r.stderr
    r = vagrant(tmp_path, "libvirt", ARGOCTL_TUNNEL="ipip")
    assert r.returncode != 0 and "must be gre or wireguard" in r.stdout + r.stderr


@pytest.mark.parametrize("provider, block", [("libvirt", "lv"), ("virtualbox", "vb")])
def test_vagrant_validate_catches_a_bad_provider_setting(tmp_path, provider, block):
    copy = tmp_path / "vagrant"
    shutil.copytree(VAGRANT_DIR, copy, ignore=shutil.ignore_patterns(".vagrant"))
    text = (copy / "Vagrantfile").read_text()
    anchor = f"    {block}.memory = 1024\n"
    assert anchor in text
    (copy / "Vagrantfile").write_text(text.replace(anchor, anchor + f"    {block}.memroy = 1\n"))
    r = vagrant(tmp_path, provider, copy)
    assert r.returncode != 0 and "memroy" in r.stdout + r.stderr


@pytest.fixture(scope="module")
def plan():
    ruby = shutil.which("ruby")
    assert ruby, "ruby is missing (it comes with vagrant)"
    # Run by plain ruby, the Vagrantfile prints its hosts, links and routes.
    r = subprocess.run([ruby, str(VAGRANTFILE)], capture_output=True, text=True, timeout=60,
                       check=True)
    return json.loads(r.stdout)


def test_vagrant_network_plan_matches_the_lab(plan):
    hosts, links, routes = plan["hosts"], plan["links"], plan["routes"]
    lab = labconfig.default_topology("vagrant")
    for h in lab.hosts:
        assert hosts[h.name]["loopback"] == h.address
    assert hosts["origin"]["loopback"] == topo.UNDERLAY["origin"][0]
    assert set(hosts) == {"client", *MESH}

    for link in links:
        net = ipaddress.ip_network(f"{next(iter(link['ends'].values()))}/{link['prefix']}",
                                   strict=False)
        assert any(net.subnet_of(d) for d in DOC_RANGES), link
        for addr in link["ends"].values():
            assert ipaddress.ip_address(addr) in net and not addr.endswith(".1"), link
    # The mesh is the namespace lab's: same pairs, same /30s, same ends.
    mesh = {tuple(sorted(l["ends"])): l for l in links
            if len(l["ends"]) == 2 and set(l["ends"]) <= set(MESH)}
    assert len(mesh) == len(topo.MESH_PAIRS)
    for i, (a, b) in enumerate(topo.MESH_PAIRS):
        ends = mesh[tuple(sorted((a, b)))]["ends"]
        assert (ends[a], ends[b]) == (f"192.0.2.{65 + 4 * i}", f"192.0.2.{66 + 4 * i}")
    origin_net = [l for l in links if list(l["ends"]) == ["origin"]]
    assert [l["ends"]["origin"] for l in origin_net] == [lab.origin_target]

    # Direct paths: every mesh node reaches every other's loopback over their own link,
    # and edge and both relays reach the origin prefix directly.
    for x in MESH:
        via = dict(r.split(" via ") for r in routes[x])
        for y in MESH:
            if y != x:
                assert via[f"{hosts[y]['loopback']}/32"] == mesh[tuple(sorted((x, y)))]["ends"][y]
        if x != "origin":
            assert via["203.0.113.0/24"] == mesh[tuple(sorted((x, "origin")))]["ends"]["origin"]
    assert dict(r.split(" via ") for r in routes["origin"])["198.51.100.0/25"] == "192.0.2.73"


def lab_config(host: str, kind: str, lanif: str, directory: Path, seed: str = SEED):
    """Run the provisioning's config step (vagrant/lab-config.sh) as a VM would."""
    env = dict(os.environ, ARGOCTL_LAB_SEED=seed,
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["sh", str(VAGRANT_DIR / "lab-config.sh"), host, kind, lanif,
                           str(directory)], env=env, capture_output=True, text=True, timeout=120)


def provision_all(root: Path, kind: str, lanif: str = "ens6") -> dict[str, Path]:
    dirs = {}
    for host in MESH:
        d = root / host / "etc-argoctl"
        r = lab_config(host, kind, lanif if host == "edge" else "-", d)
        assert r.returncode == 0, r.stdout + r.stderr
        dirs[host] = d
    return dirs


@pytest.mark.parametrize("kind", labconfig.TUNNEL_KINDS)
def test_provisioning_writes_configs_argoctl_validate_accepts(tmp_path, kind):
    dirs = provision_all(tmp_path, kind)
    assert not (dirs["origin"] / "argoctl.toml").exists()   # origin runs only the responder
    assert (dirs["origin"] / "lab" / "keys" / "responder.key").exists()
    files = [str(dirs[h] / "argoctl.toml") for h in ("edge", "relay1", "relay2")]
    result = CliRunner().invoke(cli, ["validate", *files])
    assert result.exit_code == 0, result.output
    cfgs = {h: config.load(str(dirs[h] / "argoctl.toml")) for h in ("edge", "relay1", "relay2")}
    assert cfgs["edge"].node.steer_interfaces == ("ens6",)
    assert [str(p) for p in cfgs["edge"].destinations[0].prefixes] == ["203.0.113.0/24"]
    for path in (dirs[h] / "lab-seed" for h in MESH):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    if kind == "wireguard":
        for relay in ("relay1", "relay2"):
            key = cfgs[relay].node.private_key_file
            assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
            assert cfgs["edge"].peer(relay).public_key == \
                keys.encode(keys.public_key(keys.read_private_key(key)))
            assert cfgs[relay].peer("edge").public_key == keys.encode(
                keys.public_key(keys.read_private_key(cfgs["edge"].node.private_key_file)))
    # The origin's responder and the edge's probes share the key.
    assert (dirs["origin"] / "lab" / "keys" / "responder.key").read_bytes() == \
        Path(cfgs["edge"].policy.responder_key_file).read_bytes()


def test_reprovisioning_is_deterministic(tmp_path):
    dirs = provision_all(tmp_path, "wireguard")
    before = {p: p.read_bytes() for d in dirs.values() for p in d.rglob("*") if p.is_file()}
    provision_all(tmp_path, "wireguard")
    after = {p: p.read_bytes() for d in dirs.values() for p in d.rglob("*") if p.is_file()}
    assert before == after


def test_provisioning_without_seed_fails_before_writing(tmp_path):
    r = lab_config("edge", "gre", "-", tmp_path / "d", seed="")
    assert r.returncode != 0 and "lab secret missing" in r.stderr
    assert not (tmp_path / "d").exists()


def test_provision_script_parses():
    for script in ("provision.sh", "lab-config.sh", "lab-net.sh"):
        r = subprocess.run(["sh", "-n", str(VAGRANT_DIR / script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("unit", ["contrib/argoctl.service", "vagrant/argoctl-responder.service"])
def test_systemd_units_verify_cleanly(tmp_path, unit):
    """systemd's own checker finds no problem (it reports, e.g., a misspelled
    Restart= value only on its output, so the output must be empty)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (package systemd)"
    text = (VAGRANT_DIR.parent / unit).read_text()
    # The units run the installed /usr/local/bin/argoctl; verify against this checkout's.
    copy = tmp_path / Path(unit).name
    copy.write_text(text.replace("/usr/local/bin/argoctl", str(Path(sys.executable).parent / "argoctl")))
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_daemon_unit_restarts_on_failure_and_keeps_the_datapath():
    text = (VAGRANT_DIR.parent / "contrib" / "argoctl.service").read_text()
    assert "\nExecStart=/usr/local/bin/argoctl run -c /etc/argoctl/argoctl.toml\n" in text
    assert "\nRestart=on-failure\n" in text
    assert "SIGTERM" in text and "datapath in place" in text and "--cleanup" not in text


def test_rt_protos_names_our_route_protocol():
    from argoctl import names
    lines = [l.split() for l in (VAGRANT_DIR.parent / "contrib" / "rt_protos.d" / "argoctl.conf")
             .read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines == [[str(names.RTPROT_ARGOCTL), "argoctl"]]
