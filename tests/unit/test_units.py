"""The systemd units: hardened as docs/systemd.md says (systemd-analyze security,
offline, on the files as shipped), Type=notify with a watchdog and reload for the
daemon, no privileges for the responder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


def exposure(unit: str) -> float:
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", str(CONTRIB / unit)],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout + p.stderr)
    assert m, p.stdout + p.stderr
    return float(m.group(1))


@pytest.mark.parametrize("unit, limit", [("argoctl.service", 5.0),
                                         ("argoctl-responder.service", 3.0)])
def test_exposure_within_limit(unit, limit):
    assert exposure(unit) <= limit


def test_daemon_unit_notifies_watches_and_reloads():
    text = (CONTRIB / "argoctl.service").read_text()
    for line in ("Type=notify", "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID",
                 "ProtectSystem=strict", "RuntimeDirectoryPreserve=yes"):
        assert line in text, line
    assert re.search(r"^WatchdogSec=\d+", text, re.M)


def test_responder_unit_runs_without_privileges():
    text = (CONTRIB / "argoctl-responder.service").read_text()
    assert "DynamicUser=yes" in text and re.search(r"^CapabilityBoundingSet=$", text, re.M)
    assert "LoadCredential=probe.key:" in text and "${CREDENTIALS_DIRECTORY}/probe.key" in text
