"""CLI conventions: --json on every reporting command, the default config path,
permission denied said as such, shell completion as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from argoctl import names
from argoctl.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def test_every_reporting_command_has_json():
    for cmd in ("validate", "up", "down", "status", "probe", "explain", "keygen"):
        out = CliRunner().invoke(cli, [cmd, "--help"]).output
        assert "--json" in out, cmd


def test_validate_json_reports_problems_and_notes(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "examples" / "relay.toml").read_text().replace(
        'address = "192.0.2.1"', 'address = "192.0.2.999"'))
    r = CliRunner().invoke(cli, ["validate", "--json", str(ROOT / "examples" / "edge.toml"),
                                 str(bad)])
    assert r.exit_code == 2
    ok, fail = [json.loads(line) for line in r.stdout.splitlines()]
    assert ok["ok"] and ok["notes"] and ok["summary"].endswith("3 prefixes")
    assert not fail["ok"] and fail["problems"][0]["line"] == 13
    assert "192.0.2.999" in fail["problems"][0]["message"]


def test_default_config_path():
    assert names.DEFAULT_CONFIG == "/etc/argoctl/argoctl.toml"
    for cmd in ("up", "run", "probe"):
        assert names.DEFAULT_CONFIG in CliRunner().invoke(cli, [cmd, "--help"]).output, cmd
    r = CliRunner().invoke(cli, ["validate"])
    if not os.path.exists(names.DEFAULT_CONFIG):
        assert r.exit_code == 2 and f"{names.DEFAULT_CONFIG}:1: cannot read" in r.stderr


def test_status_and_down_without_privileges_say_permission_denied():
    for argv in (["status"], ["status", "--json"], ["down", "--dry-run"]):
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-m", "argoctl", *argv],
                           capture_output=True, text=True, cwd="/", timeout=120)
        assert p.returncode == 4, (argv, p.stdout, p.stderr)
        assert "permission denied" in p.stderr and "absent" not in p.stdout + p.stderr
        if "--json" in argv:
            assert json.loads(p.stdout)["error"] == "permission denied"


def test_shell_completion_as_the_readme_documents():
    readme = (ROOT / "README.md").read_text()
    assert "_ARGOCTL_COMPLETE=bash_source argoctl" in readme
    script = Path(sys.executable).parent / "argoctl"
    p = subprocess.run([str(script)], capture_output=True, text=True,
                       env={**os.environ, "_ARGOCTL_COMPLETE": "bash_source"}, timeout=120)
    assert p.returncode == 0 and "complete -o nosort -F" in p.stdout and "argoctl" in p.stdout
    p = subprocess.run([str(script)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "_ARGOCTL_COMPLETE": "bash_complete",
                            "COMP_WORDS": "argoctl val", "COMP_CWORD": "1"})
    assert "validate" in p.stdout
