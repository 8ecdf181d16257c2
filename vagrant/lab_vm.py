"""The lab's traffic inside the Vagrant VMs (`make vagrant-lab`), with argoctl's
own traffic code (the same clients and echo service as `make demo`):

    lab_vm.py echo ADDRESS             origin: the UDP echo service (a unit runs it)
    lab_vm.py traffic [--rate N]       edge: the steered and the baseline client

`traffic` waits until edge's daemon uses the direct path with every path up,
starts both clients (namespaces `client`, on the steered LAN, and `baseline`,
which argoctl does not steer), prints READY, and runs until a line END arrives
on stdin: the host plays the scenario on the links between the VMs meanwhile.
Then it prints one JSON line: the window's numbers for both clients and the
path switches the daemon logged (its journal), in `make demo`'s summary form.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import subprocess
import sys
import time

from argoctl.lab.traffic import EchoServer, RequestClient
from argoctl.service import parse_line

ORIGIN = "203.0.113.10"
DEST = "origin"
STATE = "/run/argoctl/state.json"
DEADLINE_S = 2.0                        # as make demo: unanswered for this long = failed
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


class Netns:
    """What the traffic classes need of a host: a name and a way in."""

    def __init__(self, name: str | None):
        self.name = name or "root"
        self.path = f"/run/netns/{name}" if name else None

    @contextlib.contextmanager
    def inside(self):
        if self.path is None:
            yield
            return
        with open("/proc/thread-self/ns/net") as home, open(self.path) as target:
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def settled() -> tuple[bool, str]:
    try:
        with open(STATE) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        return False, f"no state yet ({e.__class__.__name__})"
    dest = doc.get("destinations", {}).get(DEST, {})
    paths = {n: p.get("state") for n, p in dest.get("paths", {}).items()}
    ok = dest.get("choice") == "direct" and paths and all(s == "up" for s in paths.values())
    return bool(ok), f"via {dest.get('choice')} paths {paths}"


def switches(t0: float, until: float) -> list[dict]:
    """Decisions that changed the origin's path, from the daemon's journal
    (its `at` is CLOCK_MONOTONIC, the clock time.monotonic() reads here)."""
    out = subprocess.run(["journalctl", "-u", "argoctl", "-o", "cat", "--since", "-30min",
                          "--no-pager"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        try:        # the daemon's lines: `<time> <level> <message>` (service.LineFormatter)
            rec = json.loads(parse_line(line)[2])
        except ValueError:
            continue
        if not isinstance(rec, dict) or rec.get("event") != "decision" or rec.get("dest") != DEST:
            continue
        if rec.get("previous") in (None, rec.get("choice")) or not t0 <= rec["at"] < until:
            continue
        found.append({"at_s": round(rec["at"] - t0, 2), "from": rec["previous"],
                      "to": rec["choice"], "reason": rec.get("reason", "")})
    return found


def traffic(rate: float, settle_timeout: float, description: str) -> int:
    deadline = time.monotonic() + settle_timeout
    last = ""
    while True:
        ok, what = settled()
        if ok:
            break
        if what != last:
            say(f"lab_vm: waiting for edge to settle: {what}")
            last = what
        if time.monotonic() > deadline:
            say(f"lab_vm: edge did not settle on direct with every path up in "
                f"{settle_timeout:g} s: {what}")
            return 1
        time.sleep(0.5)
    steered = RequestClient(Netns("client"), ORIGIN, rate=rate, client_id=1, deadline=DEADLINE_S)
    baseline = RequestClient(Netns("baseline"), ORIGIN, rate=rate, client_id=2,
                             deadline=DEADLINE_S)
    try:
        time.sleep(2.0)                 # both clients running before the window opens
        t0 = time.monotonic()
        print("READY", flush=True)
        for line in sys.stdin:
            if line.strip() == "END":
                break
        until = time.monotonic()
        time.sleep(DEADLINE_S + 0.2)    # the window's last requests finish
    finally:
        steered.stop()
        baseline.stop()
    a, b = steered.stats(t0, until), baseline.stats(t0, until)
    lat_saved = None if a.median_ms is None or b.median_ms is None \
        else round(b.median_ms - a.median_ms, 2)
    print(json.dumps({"description": description, "duration_s": round(until - t0, 1),
                      "argoctl": a.to_dict(), "direct_only": b.to_dict(),
                      "requests_saved": a.ok - b.ok, "latency_saved_ms": lat_saved,
                      "switches": switches(t0, until)}, sort_keys=True), flush=True)
    return 0


def echo(address: str) -> int:
    server = EchoServer(Netns(None), address)
    say(f"lab_vm: echo service on {address}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo")
    e.add_argument("address")
    t = sub.add_parser("traffic")
    t.add_argument("--rate", type=float, default=20.0)
    t.add_argument("--settle-timeout", type=float, default=300.0)
    t.add_argument("--description", default="")
    args = ap.parse_args(argv)
    if args.cmd == "echo":
        return echo(args.address)
    return traffic(args.rate, args.settle_timeout, args.description)


if __name__ == "__main__":
    sys.exit(main())
