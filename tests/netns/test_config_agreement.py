"""validate, up and run agree over one corpus: what `validate` accepts, `up`
plans (a dry run against a real kernel, in a namespace) and `run`'s start-up
checks pass; what it refuses, `up` and `run` refuse the same way (exit 2, no
traceback) before touching anything.

The corpus: the shipped examples as shipped (their key files do not exist: up
and run create them), every bad fixture of tests/unit/configs, and seeded
mutations of the examples (tests/unit/configfuzz.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from argoctl import apply, config, daemon, preflight
from argoctl.cli import cli

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
import configfuzz  # noqa: E402

BAD = sorted((Path(__file__).parents[1] / "unit" / "configs" / "bad").glob("*.toml"))
MUTATIONS = 250


@pytest.fixture
def host(topo):
    h = topo.add_host("cfg", loopback="192.0.2.1", loopback6="2001:db8::1")
    topo.start()
    # every underlay address resolves (the dry run asks the kernel for its MTU)
    h.run(["sh", "-ec", "ip route add default dev lo; ip -6 route add default dev lo"],
          check=True)
    return h


def corpus(directory: Path) -> list[Path]:
    files = []
    for example in configfuzz.EXAMPLES:
        files.append(directory / example.name)
        shutil.copyfile(example, files[-1])
    for fixture in BAD:
        files.append(directory / f"bad-{fixture.name}")
        shutil.copyfile(fixture, files[-1])
    for i, (_, data) in enumerate(configfuzz.cases(1407, MUTATIONS)):
        files.append(directory / f"mut{i}.toml")
        files[-1].write_bytes(data)
    return files


def test_validate_up_and_run_agree_on_one_corpus(host, tmp_path):
    runner = CliRunner()
    outcome = {"accepted": 0, "refused": 0}
    for f in corpus(tmp_path):
        v = runner.invoke(cli, ["validate", str(f)])
        assert v.exit_code in (0, 2) and not isinstance(v.exception, Exception) or \
            isinstance(v.exception, SystemExit), (f.name, v.exception)
        if v.exit_code == 2:
            outcome["refused"] += 1
            # up and run refuse at the same step, with the same problems
            for argv in (["up", "-c", str(f), "--dry-run"], ["run", "-c", str(f)]):
                r = runner.invoke(cli, argv)
                assert r.exit_code == 2, (f.name, argv, r.output)
                assert r.stderr == v.stderr, (f.name, argv)
            continue
        outcome["accepted"] += 1
        cfg = config.load(str(f))
        # up: the plan against this kernel, nothing applied
        ctx = apply.up(cfg, ns=host.netns, dry_run=True, run_dir=str(tmp_path / "run"))
        assert ctx.ops, f.name
        # run: its start-up checks (the probe key, created when missing; the preflight)
        d = daemon.Daemon(cfg, daemon.Options(ns=host.netns, run_dir=str(tmp_path / "run")))
        preflight.check(cfg, key=d._read_key())
    assert outcome["accepted"] >= 30 and outcome["refused"] >= 100, outcome
    # the dry runs created no key file (run's key check may: it is run's start-up)
    assert not (tmp_path / "edge.key").exists() and not (tmp_path / "relay2.key").exists()


def test_the_examples_validate_as_shipped():
    """From the repository as cloned: no key file exists, nothing is staged."""
    result = CliRunner().invoke(cli, ["validate", *map(str, configfuzz.EXAMPLES)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count(": ok: node ") == len(configfuzz.EXAMPLES)
