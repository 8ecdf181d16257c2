"""Config loading and validation: every malformed fixture is rejected with
file:line, valid files load into the model the rest of argoctl reads."""

import base64
import dataclasses
import ipaddress
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import nftables
import pytest
from click.testing import CliRunner

from argoctl import config, keys
from argoctl.cli import cli
from argoctl.tomlpos import Locator

CONFIGS = Path(__file__).parent / "configs"
EXAMPLES = Path(__file__).parents[2] / "examples"
BAD = sorted((CONFIGS / "bad").glob("*.toml"))

# RFC 7748 section 6.1: Alice's key pair. A published test key, not a secret.
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
KEY_CONTENT = {
    "alice": base64.b64encode(ALICE_PRIVATE) + b"\n",
    "garbage": b"this is not a key\n",
    "short": base64.b64encode(b"k" * 16) + b"\n",
    "creds": b'user = "edge"\npassword = "a-fleet-password"\n',
}


def directives(fixture: Path, name: str) -> list[str]:
    head = fixture.read_bytes().decode("utf-8", "replace").splitlines()
    return [line.split(":", 1)[1].strip() for line in head if line.startswith(f"# {name}:")]


def stage(fixture: Path, directory: Path) -> Path:
    """Copy a fixture to `directory` with the key files its `# key:` lines ask for
    (git does not keep file modes, so they are made here)."""
    target = directory / fixture.name
    shutil.copyfile(fixture, target)
    for spec in directives(fixture, "key"):
        name, mode, kind = spec.split()
        path = directory / name
        path.write_bytes(KEY_CONTENT[kind])
        os.chmod(path, int(mode, 8))
    return target


def validate(*files) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(cli, ["validate", *map(str, files)])


def test_there_are_enough_bad_fixtures():
    assert len(BAD) >= 35


@pytest.mark.parametrize("fixture", BAD, ids=[f.stem for f in BAD])
def test_bad_config_is_rejected_with_file_and_line(fixture, tmp_path):
    expected = directives(fixture, "expect")
    assert expected, f"{fixture.name} has no '# expect: LINE: fragment' line"
    path = stage(fixture, tmp_path)
    result = validate(path)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    for spec in expected:
        line, fragment = spec.split(":", 1)
        wanted = re.compile(rf"^{re.escape(str(path))}:{line}: .*{re.escape(fragment.strip())}",
                            re.M)
        assert wanted.search(result.stderr), f"want {path}:{line}: ...{fragment}\n{result.stderr}"


def test_every_problem_is_reported_in_line_order(tmp_path):
    path = tmp_path / "many.toml"
    path.write_text(
        '[node]\n'                                # 1
        'name = "Edge"\n'                         # 2  bad name
        'address = "192.0.2.1"\n'                 # 3
        'tunnel_address = "198.51.100.1"\n'       # 4
        '\n'                                      # 5
        '[[peer]]\n'                              # 6  missing tunnel
        'name = "relay1"\n'                       # 7
        'address = "192.0.2.999"\n'               # 8  bad address
        'tunnel_address = "198.51.100.2"\n'       # 9
        '\n'                                      # 10
        '[[destination]]\n'                       # 11
        'name = "origin"\n'                       # 12
        'prefixes = ["203.0.113.1/24"]\n'         # 13 host bits
        'paths = ["direct", "relay9"]\n'          # 14 unknown path
        'colour = "blue"\n'                       # 15 unknown key
    )
    with pytest.raises(config.ConfigError) as e:
        config.load(str(path))
    got = [(p.line, p.message) for p in e.value.problems]
    assert [line for line, _ in got] == [2, 6, 8, 13, 14, 15], got
    assert all(p.file == str(path) for p in e.value.problems)
    hints = {p.line: p.hint for p in e.value.problems}
    assert "203.0.113.0/24" in hints[13]
    assert "relay1" in hints[14]
    assert str(e.value).splitlines()[0].startswith(f"{path}:2: ")


def test_hints_suggest_the_intended_name(tmp_path):
    path = stage(CONFIGS / "bad" / "unknown-key.toml", tmp_path)
    result = validate(path)
    assert "(hint: did you mean 'address'?)" in result.stderr
    path = stage(CONFIGS / "bad" / "private-key-group-readable.toml", tmp_path)
    result = validate(path)
    assert f"(hint: chmod 600 {tmp_path / 'edge.key'})" in result.stderr


def test_syntax_error_at_end_of_document_points_at_last_line(tmp_path):
    path = tmp_path / "cut.toml"
    path.write_text('[node]\nname = "edge"\nsteer_interfaces = ["lan0",\n')
    result = validate(path)
    assert result.exit_code == 2
    assert re.match(rf"{re.escape(str(path))}:[34]: TOML syntax error", result.stderr), result.stderr


def test_missing_config_file_is_a_problem_not_a_traceback(tmp_path):
    result = validate(tmp_path / "absent.toml")
    assert result.exit_code == 2
    assert f"{tmp_path / 'absent.toml'}:1: cannot read config file" in result.stderr


def test_several_files_all_reported(tmp_path):
    good = tmp_path / "good.toml"
    shutil.copyfile(EXAMPLES / "relay.toml", good)
    bad = stage(CONFIGS / "bad" / "bad-ip.toml", tmp_path)
    result = validate(good, bad)
    assert result.exit_code == 2
    assert "ok: node relay1" in result.stdout
    assert f"{bad}:" in result.stderr


def staged_examples(tmp_path: Path) -> Path:
    directory = tmp_path / "examples"
    shutil.copytree(EXAMPLES, directory)
    for example in directory.glob("*.toml"):  # key files are made per host, never committed
        for name in re.findall(r'^private_key_file = "(.+)"', example.read_text(), re.M):
            result = CliRunner().invoke(cli, ["keygen", "--private-key", str(directory / name)])
            assert result.exit_code == 0, result.output
    return directory


def test_examples_are_valid(tmp_path):
    directory = staged_examples(tmp_path)
    files = sorted(directory.glob("*.toml"))
    assert {f.name for f in files} >= {"edge.toml", "relay.toml", "relay2.toml"}
    result = validate(*files)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert f"{directory / 'edge.toml'}: ok: node edge, 2 peers, 2 destinations, 3 prefixes" \
        in result.stdout


def test_edge_example_covers_every_key():
    """The commented example is the reference users copy: it must show every key."""
    text = (EXAMPLES / "edge.toml").read_text()
    keys_in_text = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, re.M))
    keys_in_text |= set(re.findall(r"[{,]\s*([a-z_]+)\s*=", text))
    every = set(config._NODE_KEYS + config._PEER_KEYS + config._DEST_KEYS + config._PROBE_KEYS)
    every |= {f.name for f in dataclasses.fields(config.Routing)}
    every |= set(config._POLICY_RULES) | set(config._FLEET_KEYS)
    assert every - keys_in_text == set()


def test_example_loads_into_the_model(tmp_path):
    directory = staged_examples(tmp_path)
    cfg = config.load(str(directory / "edge.toml"))
    assert cfg.node.name == "edge"
    assert cfg.node.address == ipaddress.ip_address("192.0.2.1")
    assert cfg.node.steer_interfaces == ("lan0",)
    assert cfg.node.private_key_file == str(directory / "edge.key")  # resolved, absolute
    relay1, relay2 = cfg.peers
    assert (relay1.name, relay1.id, relay1.tunnel, relay1.gre_key, relay1.mtu) == \
        ("relay1", 1, "gre", 42, 1400)
    assert (relay1.public_key, relay1.port, relay1.listen_port) == (None, None, None)
    assert (relay2.id, relay2.tunnel, relay2.port, relay2.listen_port) == \
        (2, "wireguard", 51820, 51821)
    assert keys.decode(relay2.public_key)
    origin, backup = cfg.destinations
    assert (origin.id, backup.id) == (1, 2)
    assert origin.prefixes == (ipaddress.ip_network("203.0.113.0/24"),
                               ipaddress.ip_network("2001:db8:3::/48"))
    assert origin.paths == ("direct", "relay1", "relay2")
    assert origin.weights == (2, 1, 1)
    assert origin.probe == config.Probe("udp", ipaddress.ip_address("203.0.113.10"), 7447)
    assert backup.probe == config.Probe("icmp", ipaddress.ip_address("198.51.100.130"), None)
    assert backup.weights is None
    assert cfg.path_id("direct") == 0 and cfg.path_id("relay2") == 2
    assert cfg.routing.mark(2) == 0x00000002 and cfg.routing.mark(0) == 0x000000FF
    assert cfg.routing.table(2) == 7202 and cfg.routing.priority(2) == 7202
    assert cfg.policy == config.Policy(responder_key_file=str(directory / "probe.key"))
    assert isinstance(cfg.policy.hold_down_s, float)


def test_defaults_and_explicit_values(tmp_path):
    path = tmp_path / "v6.toml"
    path.write_text(
        '[node]\nname = "n1"\naddress = "2001:db8::1"\ntunnel_address = "2001:db8:ff::1"\n'
        'relay = false\n'
        '[[peer]]\nname = "p-2"\nid = 254\naddress = "2001:db8::2"\ntunnel = "gre"\n'
        'tunnel_address = "2001:db8:ff::2"\n'
        '[[peer]]\nname = "p3"\naddress = "2001:db8::3"\ntunnel = "gre"\n'
        'tunnel_address = "2001:db8:ff::3"\n'
        '[[destination]]\nname = "d"\nprefixes = ["2001:db8:3::/48", "203.0.113.7"]\n'
        'paths = ["p3", "p-2"]\n'
        '[routing]\ntable_base = 1000\nrule_priority_base = 100\nfwmark_mask = 0xff00\n'
        '[policy]\nhold_down_s = 5\nsplit = true\nmetrics_listen = "[::1]:9100"\n'
    )
    cfg = config.load(str(path))
    assert cfg.node.relay is False and cfg.node.steer_interfaces == ()
    assert cfg.node.private_key_file is None
    assert [p.id for p in cfg.peers] == [254, 2]
    assert cfg.destinations[0].prefixes[1] == ipaddress.ip_network("203.0.113.7/32")
    assert cfg.destinations[0].probe is None
    assert cfg.routing == config.Routing(1000, 100, 0xFF00)
    assert cfg.routing.mark(254) == 0xFE00 and cfg.routing.mark(0) == 0xFF00
    assert cfg.policy.hold_down_s == 5.0 and cfg.policy.split is True
    assert cfg.policy.metrics_listen == "[::1]:9100"


def test_policy_rules_cover_every_policy_field():
    assert set(config._POLICY_RULES) == {f.name for f in dataclasses.fields(config.Policy)}


def test_responder_key_file_is_resolved_and_checked(tmp_path):
    key = tmp_path / "probe.key"
    key.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    key.chmod(0o600)
    text = (EXAMPLES / "relay.toml").read_text() + '\n[policy]\nresponder_key_file = "probe.key"\n'
    (tmp_path / "r.toml").write_text(text)
    assert config.load(str(tmp_path / "r.toml")).policy.responder_key_file == str(key)
    key.chmod(0o604)
    with pytest.raises(config.ConfigError, match="readable by group or others"):
        config.load(str(tmp_path / "r.toml"))


def test_no_key_material_in_messages(tmp_path):
    """A private key pasted where a public key belongs is caught, and never echoed."""
    private = keys.encode(ALICE_PRIVATE)
    fixture = stage(CONFIGS / "bad" / "wg-own-public-key.toml", tmp_path)
    text = fixture.read_text().replace("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=", private)
    fixture.write_text(text)
    result = validate(fixture)
    assert result.exit_code == 2
    assert "PRIVATE key" in result.stderr
    assert private not in result.output and private[:20] not in result.output
    assert ALICE_PRIVATE.hex()[:16] not in result.output


def host_state() -> dict:
    """What validation must never change: the root namespace's links, addresses,
    rules, routes and nft ruleset (read only)."""
    cmds = {
        "link": ["ip", "-d", "link", "show"],
        "addr": ["ip", "addr", "show"],
        "rule4": ["ip", "-4", "rule", "show"],
        "rule6": ["ip", "-6", "rule", "show"],
        "route4": ["ip", "-4", "route", "show", "table", "all"],
        "route6": ["ip", "-6", "route", "show", "table", "all"],
    }
    state = {k: subprocess.run(c, capture_output=True, text=True, check=True).stdout
             for k, c in cmds.items()}
    rc, state["nft"], err = nftables.Nftables().cmd("list ruleset")
    assert rc == 0, err
    # counters and timers move on their own
    state["link"] = re.sub(r"\s+(valid_lft|preferred_lft)\s+\S+", "", state["link"])
    state["addr"] = re.sub(r"\s+(valid_lft|preferred_lft)\s+\S+", "", state["addr"])
    return state


def test_validation_changes_nothing(tmp_path):
    before = host_state()
    staged = [stage(f, tmp_path / f.stem) for f in BAD if (tmp_path / f.stem).mkdir() is None]
    listing = {p: (p.stat().st_mode, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}
    result = validate(*staged)
    assert result.exit_code == 2
    assert result.stderr.count("\n") >= len(BAD)
    after = {p: (p.stat().st_mode, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}
    assert after == listing
    assert host_state() == before


LOCATOR_TEXT = '''\
# comment with "quotes" and [brackets]
title = """multi
line [not a table]
"""
[node]
name = 'edge' # trailing
"quoted key" = 1
a.b = 2

[[destination]]
name = "x"
prefixes = [
  "203.0.113.0/24", # first
  # a comment line
  "2001:db8::/32",
]
probe = { kind = "udp", target = "203.0.113.1", port = 7 }

[[destination]]
name = "y\\"]"
paths = [["nested", "array"], "z"]

[destination.probe]
kind = "icmp"
'''


def test_locator_finds_lines():
    loc = Locator(LOCATOR_TEXT)
    assert loc.line(("title",)) == 2
    assert loc.line(("node",)) == 5
    assert loc.line(("node", "name")) == 6
    assert loc.line(("node", "quoted key")) == 7
    assert loc.line(("node", "a", "b")) == 8
    assert loc.line(("destination", 0)) == 10
    assert loc.line(("destination", 0, "prefixes")) == 12
    assert loc.line(("destination", 0, "prefixes", 0)) == 13
    assert loc.line(("destination", 0, "prefixes", 1)) == 15
    assert loc.line(("destination", 0, "probe", "port")) == 17
    assert loc.line(("destination", 1)) == 19
    assert loc.line(("destination", 1, "paths", 1)) == 21
    assert loc.line(("destination", 1, "probe")) == 23
    assert loc.line(("destination", 1, "probe", "kind")) == 24
    # a missing key points at its table; an unknown path at line 1
    assert loc.line(("destination", 1, "weights")) == 19
    assert loc.line(("nowhere",)) == 1


def test_mutated_configs_fail_cleanly(tmp_path):
    """Random edits of the example never crash the loader: it returns a Config or a
    ConfigError whose problems point inside the file."""
    directory = staged_examples(tmp_path)
    source = (directory / "edge.toml").read_text().split("\n")
    values = ["1", "-1", "0", '"x"', "true", "[]", '[1, "a"]', "{}", "{ a = 1 }",
              '"192.0.2.1"', '"::1"', "1.5", "0xffffffff", '"direct"', '"relay1"',
              '"203.0.113.0/24"', "1979-05-27T07:32:00Z", '["lan0"]', '"edge.key"']
    rnd = random.Random(7)
    path = directory / "mutated.toml"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        lines = list(source)
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randrange(len(lines))
            op = rnd.random()
            if op < 0.3:
                del lines[i]
            elif op < 0.8 and "=" in lines[i] and not lines[i].startswith("#"):
                lines[i] = lines[i].split("=")[0] + "= " + rnd.choice(values)
            else:
                lines.insert(i, rnd.choice(lines))
        path.write_text("\n".join(lines))
        try:
            config.load(str(path))
            outcomes["ok"] += 1
        except config.ConfigError as e:
            outcomes["error"] += 1
            assert e.problems
            for p in e.problems:
                assert 1 <= p.line <= len(lines) + 1, (p, "\n".join(lines))
    assert outcomes["ok"] > 10 and outcomes["error"] > 300


def test_every_model_field_is_a_validated_key():
    """Adding a field to the model without teaching the loader about it fails here."""
    def names(cls):
        return {f.name for f in dataclasses.fields(cls)}
    assert set(config._NODE_KEYS) == names(config.Node)
    assert set(config._PEER_KEYS) == names(config.Peer)
    assert set(config._DEST_KEYS) == names(config.Destination) - {"id"}  # id = config order
    assert set(config._PROBE_KEYS) == names(config.Probe)


def test_windows_line_endings_keep_line_numbers(tmp_path):
    fixture = CONFIGS / "bad" / "bad-ip.toml"
    path = tmp_path / "crlf.toml"
    path.write_bytes(fixture.read_bytes().replace(b"\n", b"\r\n"))
    result = validate(path)
    line = directives(fixture, "expect")[0].split(":")[0]
    assert result.exit_code == 2 and f"{path}:{line}: peer.address" in result.stderr


@pytest.mark.parametrize("prefixes, clash", [
    (["203.0.113.0/26", "203.0.113.0/24"], "203.0.113.0/24 overlaps 203.0.113.0/26"),
    (["203.0.113.0/24", "203.0.113.128/25"], "203.0.113.128/25 overlaps 203.0.113.0/24"),
    (["2001:db8:1:2::/64", "2001:db8::/32"], "2001:db8::/32 overlaps 2001:db8:1:2::/64"),
    (["203.0.113.0/25", "203.0.113.128/25", "2001:db8::/33", "2001:db8:8000::/33"], None),
])
def test_overlap_is_found_whichever_prefix_comes_first(tmp_path, prefixes, clash):
    # A large destination is checked in linear time: the supernet may come before or
    # after the prefix it covers, and disjoint siblings never clash.
    f = tmp_path / "c.toml"
    f.write_text('[node]\nname = "edge"\naddress = "192.0.2.1"\n'
                 'tunnel_address = "198.51.100.1"\n[[destination]]\nname = "d"\n'
                 f'prefixes = {prefixes!r}\npaths = ["direct"]\n'.replace("'", '"'))
    if clash is None:
        assert len(config.load(str(f)).destinations[0].prefixes) == len(prefixes)
    else:
        with pytest.raises(config.ConfigError) as e:
            config.load(str(f))
        assert f"{f}:7: destination.prefixes[1]: {clash}" in str(e.value)
