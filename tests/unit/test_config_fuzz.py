"""No input gives a traceback, and no message echoes key material.

A seeded fuzz of the shipped examples (tests/unit/configfuzz.py: delete,
duplicate and swap lines, truncate, flip bytes, change types, NUL bytes and
non-UTF-8 in strings and paths, a key pasted anywhere): every case ends in a
ConfigError whose problems point inside the file, or in a Config that what `up`
and `run` derive from it accepts too (argoctl.preflight). 10,000 cases through
the loader in-process, a sample through the real CLI."""

from __future__ import annotations

import collections
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from argoctl import config, keys, preflight
from argoctl.cli import cli

import configfuzz

SEED = 14
CASES = 10_000
CLI_CASES = 300


def test_fuzz_the_loader_10000_cases(capsys):
    counts = collections.Counter()
    for path, data in configfuzz.cases(SEED, CASES):
        try:
            cfg = config.check(str(path), data)
        except config.ConfigError as e:
            counts["rejected"] += 1
            assert e.problems
            n_lines = data.count(b"\n") + 1
            for p in e.problems:
                assert 1 <= p.line <= n_lines + 1, (str(p), data)
                assert configfuzz.PASTED_KEY not in str(p), (str(p), data)
            continue
        counts["accepted"] += 1
        # what validate accepts, up and run accept: their config-only steps agree
        gap = preflight.problem_of(cfg)
        assert gap is None, (gap, data)
    assert sum(counts.values()) == CASES
    # both outcomes are exercised in earnest
    assert counts["accepted"] > CASES // 50 and counts["rejected"] > CASES // 2
    with capsys.disabled():
        print(f"\nconfig fuzz: seed {SEED}, {CASES} cases: {counts['accepted']} accepted, "
              f"{counts['rejected']} rejected, 0 tracebacks")


def test_fuzz_through_the_cli(tmp_path):
    """One `argoctl validate` process over CLI_CASES mutated files (file names with
    non-UTF-8 bytes among them): exit 0 or 2, never a traceback or a pasted key."""
    files = []
    for i, (path, data) in enumerate(configfuzz.cases(SEED + 1, CLI_CASES)):
        name = f"case{i}.toml".encode() if i % 10 else f"case{i}-\xff\udcfe.toml".encode(
            "utf-8", "surrogateescape")
        f = tmp_path / name.decode("utf-8", "surrogateescape")
        f.write_bytes(data)
        files.append(f)
    proc = subprocess.run([sys.executable, "-m", "argoctl", "validate", *map(str, files)],
                          capture_output=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 2), out[-2000:]
    assert b"Traceback" not in out, out[-4000:]
    assert configfuzz.PASTED_KEY.encode() not in out
    # every file was reported on: ok, or at least one file:line problem
    text = out.decode("utf-8", "replace")
    reported = set(re.findall(r"case(\d+)", text))
    assert len(reported) == CLI_CASES


# A published test key (RFC 7748 section 6.1, Alice's private key), in the forms
# people paste: base64 as `wg genkey` prints it, and hex.
ALICE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
PASTES = [keys.encode(ALICE), ALICE.hex(), keys.encode(ALICE).rstrip("=")]


@pytest.mark.parametrize("paste", PASTES, ids=["base64", "hex", "base64-unpadded"])
def test_a_key_pasted_into_any_field_is_never_echoed(tmp_path, paste):
    text = (configfuzz.ROOT / "examples" / "edge.toml").read_text()
    fields = re.findall(r'^(\w+) = "[^"]*"', text, re.M)
    assert len(fields) >= 8
    # the node's own private key is the one that gets pasted by mistake
    keys.write_new_file(str(tmp_path / "edge.key"), (keys.encode(ALICE) + "\n").encode(), 0o600)
    runner = CliRunner()
    for field in sorted(set(fields)):
        for variant in (paste, f"x{paste}y", f"{paste}/edge.key", f"../{paste}"):
            bad = re.sub(rf'^({field}) = "[^"]*"', lambda m: f'{m.group(1)} = "{variant}"',
                         text, flags=re.M)
            f = tmp_path / "edge.toml"
            f.write_text(bad)
            result = runner.invoke(cli, ["validate", str(f)])
            assert result.exception is None or isinstance(result.exception, SystemExit), \
                (field, variant, result.exception)
            if field == "public_key" and variant == PASTES[0]:   # caught, not echoed
                assert "is this node's PRIVATE key" in result.output
            for form in PASTES:
                assert form not in result.output, (field, variant, result.output)
    # a key as a whole key line, a table name and a file name
    for bad in (f'{text}\n"{paste}" = 1\n', f"{text}\n[{paste}]\n",
                text.replace('"edge.key"', f'"{paste}"')):
        (tmp_path / "edge.toml").write_text(bad)
        result = runner.invoke(cli, ["validate", str(tmp_path / "edge.toml")])
        assert result.exit_code == 2 or "note:" in result.output
        for form in PASTES:
            assert form not in result.output


def test_syntax_errors_name_the_key(tmp_path):
    base = (configfuzz.ROOT / "examples" / "relay.toml").read_text()
    f = tmp_path / "relay.toml"
    cases = {
        base.replace('name = "edge"', 'name = "edge"\nname = "again"'):
            ("key 'name' is defined twice in [[peer]] (first at line", "name = \"again\""),
        base + "\n[node]\n": ("table [node] is declared twice (first at line", "[node]"),
        base.replace("mtu = 1400", "mtu = 14 00"): ("in the value of key 'mtu'", "mtu = 14 00"),
        base.replace('tunnel = "gre"', 'tunnel = "gre'): ("in the value of key 'tunnel'",
                                                          'tunnel = "gre'),
    }
    for text, (fragment, line_text) in cases.items():
        f.write_text(text)
        result = CliRunner().invoke(cli, ["validate", str(f)])
        assert result.exit_code == 2
        m = re.search(rf"{re.escape(str(f))}:(\d+): TOML syntax error: .*", result.stderr)
        assert m and fragment in m.group(0), result.stderr
        assert text.split("\n")[int(m.group(1)) - 1] == line_text
