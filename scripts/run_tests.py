"""`make test`: the host suites on this kernel, then tests/integration natively or in
one virtme-ng VM (argoctl.lab.vm), then one closing line `N passed, N failed, N skipped`.

Exit status is non-zero if a test failed or errored, a pytest run broke (any exit
other than 0, or 5 = nothing collected), or, with CI=true, an integration test was
skipped. Results: build/test-results/{host,integration}.xml (junit).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from argoctl.lab import vm  # noqa: E402

HOST_SUITES = ["tests/unit", "tests/bpf", "tests/netns"]
INTEGRATION = "tests/integration"
RESULTS = ROOT / "build" / "test-results"
VM_TIMEOUT = 45 * 60       # CI has 90 minutes for everything


def counts(xml: Path) -> dict[str, int]:
    """passed/failed/skipped from a junit file (errors count as failed)."""
    total = failed = skipped = 0
    for suite in ET.parse(xml).getroot().iter("testsuite"):
        total += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    return {"passed": total - failed - skipped, "failed": failed, "skipped": skipped}


def has_tests(suite: str) -> bool:
    return any((ROOT / suite).rglob("test_*.py"))


def pytest_argv(suites: list[str], xml: Path) -> list[str]:
    # A module that fails to import is reported; it does not hide the other tests.
    return [sys.executable, "-m", "pytest", *suites, f"--junitxml={xml}", "-o",
            "junit_family=xunit2", "--continue-on-collection-errors"]


def finish(name: str, rc: int, xml: Path, problems: list[str]) -> dict[str, int]:
    """Counts of one run; records why it broke, if it did."""
    if rc == 5:                      # nothing collected: an empty suite is fine
        return {"passed": 0, "failed": 0, "skipped": 0}
    if not xml.exists():
        problems.append(f"{name}: pytest exited {rc} without results")
        return {"passed": 0, "failed": 0, "skipped": 0}
    c = counts(xml)
    if rc not in (0, 1) or (rc == 1 and not c["failed"]):
        problems.append(f"{name}: pytest exited {rc}")
    return c


def run_host(problems: list[str]) -> dict[str, int]:
    suites = [s for s in HOST_SUITES if (ROOT / s).is_dir()]
    xml = RESULTS / "host.xml"
    print(f"== host ({os.uname().release}): {' '.join(suites)}", flush=True)
    rc = subprocess.run(pytest_argv(suites, xml), cwd=ROOT).returncode
    return finish("host", rc, xml, problems)


def run_integration(problems: list[str]) -> dict[str, int]:
    xml = RESULTS / "integration.xml"
    if not has_tests(INTEGRATION):
        print(f"== {INTEGRATION}: no tests yet", flush=True)
        return {"passed": 0, "failed": 0, "skipped": 0}
    argv = pytest_argv([INTEGRATION], xml)
    start = time.monotonic()
    if vm.use_vm():
        try:
            kernel = vm.find_kernel()
        except RuntimeError as e:
            problems.append(f"integration: {e}")
            return {"passed": 0, "failed": 0, "skipped": 0}
        print(f"== {INTEGRATION} in a VM: kernel {kernel.version} (virtme-ng, TCG)", flush=True)
        rc = vm.run(argv, kernel=kernel, cwd=str(ROOT), rwdirs=[str(ROOT)], timeout=VM_TIMEOUT)
    else:
        print(f"== {INTEGRATION} natively ({os.uname().release})", flush=True)
        rc = subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL).returncode
    print(f"== {INTEGRATION}: {time.monotonic() - start:.0f}s, exit {rc}", flush=True)
    c = finish("integration", rc, xml, problems)
    if os.environ.get("CI") == "true" and c["skipped"]:
        problems.append(f"integration: {c['skipped']} skipped (not allowed on CI)")
    return c


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["host", "integration"])
    only = parser.parse_args().only
    RESULTS.mkdir(parents=True, exist_ok=True)
    for old in RESULTS.glob("*.xml"):
        old.unlink()
    problems: list[str] = []
    total = {"passed": 0, "failed": 0, "skipped": 0}
    for name, runner in (("host", run_host), ("integration", run_integration)):
        if only in (None, name):
            c = runner(problems)
            print(f"== {name}: {c['passed']} passed, {c['failed']} failed, "
                  f"{c['skipped']} skipped", flush=True)
            for k in total:
                total[k] += c[k]
    for p in problems:
        print(f"make test: {p}", file=sys.stderr)
    sys.stderr.flush()
    print(f"{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped",
          flush=True)
    return 1 if problems or total["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
