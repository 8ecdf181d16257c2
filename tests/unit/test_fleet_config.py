"""[fleet] in the config: absent means today's tool; present, it is checked like
every other section, and secrets never reach the output."""

import os
import shutil
from pathlib import Path

from click.testing import CliRunner

from argoctl import config
from argoctl.cli import cli

BAD = Path(__file__).parent / "configs" / "bad"
BASE = '''[node]
name = "edge"
address = "192.0.2.1"
tunnel_address = "198.51.100.1"

[[destination]]
name = "origin"
prefixes = ["203.0.113.0/24"]
paths = ["direct"]
'''


def test_without_fleet_the_model_has_none(tmp_path):
    f = tmp_path / "edge.toml"
    f.write_text(BASE)
    assert config.load(str(f)).fleet is None


def test_a_fleet_section_loads_with_defaults_and_resolved_files(tmp_path):
    creds = tmp_path / "edge.creds"
    creds.write_text('user = "edge"\npassword = "pw"\n')
    os.chmod(creds, 0o600)
    f = tmp_path / "edge.toml"
    f.write_text(BASE + '\n[fleet]\nservers = ["nats://127.0.0.1:4222", "192.0.2.11:4222"]\n'
                 'credentials_file = "edge.creds"\nalternatives = 1\n')
    fc = config.load(str(f)).fleet
    assert fc.servers == ("nats://127.0.0.1:4222", "nats://192.0.2.11:4222")
    assert fc.credentials_file == str(creds)
    assert (fc.alternatives, fc.ttl_s, fc.publish_interval_ms) == (1, 15.0, 1000)
    assert (fc.members_bucket, fc.legs_bucket) == ("argoctl_members", "argoctl_legs")
    assert fc.watch == "all"


def test_a_password_in_a_server_url_is_never_printed(tmp_path):
    shutil.copy(BAD / "fleet-server-with-password.toml", tmp_path / "edge.toml")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "edge.toml")])
    assert result.exit_code == 2
    assert "edge.toml:15: fleet.servers[0]: a URL holds credentials" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_credentials_file_content_is_never_printed(tmp_path):
    creds = tmp_path / "edge.creds"
    creds.write_text('user = "edge"\npassword = "s3cret-pass"\nextra = "s3cret-too"\n')
    os.chmod(creds, 0o600)
    f = tmp_path / "edge.toml"
    f.write_text(BASE + '\n[fleet]\nservers = ["nats://127.0.0.1:4222"]\n'
                 'credentials_file = "edge.creds"\n')
    result = CliRunner().invoke(cli, ["validate", str(f)])
    assert result.exit_code == 2
    assert "unknown keys ['extra']" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_watch_peers_hands_the_bus_the_peers_whose_legs_it_composes_with(tmp_path):
    from argoctl.engine import Engine
    from argoctl.fleet.agent import FleetAgent
    peers = ''.join(f'\n[[peer]]\nname = "{n}"\naddress = "192.0.2.{i}"\ntunnel = "gre"\n'
                    f'tunnel_address = "198.51.100.{i}"\n' for i, n in ((3, "relay2"), (2, "relay1")))
    text = BASE.replace('paths = ["direct"]', 'paths = ["direct", "relay1", "relay2"]') + peers
    bus_of = {}
    for watch in ("all", "peers"):
        f = tmp_path / f"{watch}.toml"
        f.write_text(text + f'\n[fleet]\nservers = ["nats://127.0.0.1:4222"]\nwatch = "{watch}"\n')
        cfg = config.load(str(f))
        bus_of[watch] = FleetAgent(cfg, Engine.from_config(cfg)).bus.legs_of
    assert bus_of == {"all": None, "peers": ("relay1", "relay2")}
