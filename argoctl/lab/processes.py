"""Lab hosts' programs run as processes of their own, as on real hosts: origin's
responder and, in fleet mode, the relays' daemons.

In the TCG VM a Python process costs seconds to start, but a thread shares the
lab's interpreter: with the edge's daemon, both relays' daemons, the echo
service and the clients in one process, the demo's clients got a quarter of
their send rate in fleet mode (CI, 2026-12-03) and every request timed out.
A process each lets the guest's scheduler, not one interpreter lock, share
the vCPUs.

`python -m argoctl.lab.processes daemon ...` is a lab host's daemon: what
`argoctl run` does, with the lab's options (its run directory, no metrics
listener, no local steering; a relay's datapath adopted from the pins compiled
for it and no `up` of its own; `--apply` for edge in `bench peers`)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

# generous: a Python process start in a loaded TCG guest took over 60 s
START_TIMEOUT_S = 240.0


def wait_for(pred, timeout: float, step: float = 0.05) -> bool:
    """Poll `pred` until it holds (True) or `timeout` seconds pass (its last value)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


class ResponderProcess:
    """`argoctl responder` as its own process in `host`: its replies do not
    wait for the lab's other threads to release the interpreter."""

    def __init__(self, host, key_file: str, port: int):
        self.proc = host.popen([sys.executable, "-m", "argoctl", "responder",
                                "--listen", f"0.0.0.0:{port}", "--key-file", key_file,
                                "--rate", "1000000", "--global-rate", "1000000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        bound = wait_for(lambda: self.proc.poll() is not None or host.run(
            ["ss", "-Hlun", f"sport = :{port}"]).stdout.strip() != "", START_TIMEOUT_S, 0.2)
        if not bound or self.proc.poll() is not None:
            err = self.stop()
            raise RuntimeError(f"argoctl responder on {host.name} did not start: {err}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return (err or b"").decode(errors="replace").strip()[-400:]


class DaemonProcess:
    """A host's daemon as its own process, for namespace `netns`, its log (JSON
    lines on stderr) in `log_path`. Returns once the daemon has started (its
    "start" event); `datapath` then says whether it compiled or adopted."""

    def __init__(self, config_path: str, netns: str, run_dir: str, log_path: str,
                 apply: bool = False):
        """apply: the daemon runs `up` first (as `argoctl run` does), else it only
        adopts or compiles its datapath (the relays, `up` by the lab)."""
        self.log_path = log_path
        self.datapath: Optional[str] = None
        with open(log_path, "wb") as log:      # a new log: its start event is this one's
            # the root namespace's process; the daemon works in `netns` (as the
            # in-process daemon does): `ip netns exec` would hide bpffs and its pins
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "argoctl.lab.processes", "daemon", "--config",
                 config_path, "--netns", netns, "--run-dir", run_dir,
                 *(["--apply"] if apply else [])],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True)

    def wait_started(self, timeout: float = START_TIMEOUT_S) -> "DaemonProcess":
        def started() -> bool:
            self.datapath = self._start_event()
            return self.datapath is not None or self.proc.poll() is not None
        wait_for(started, timeout, 0.2)
        if self.datapath is None:
            self.stop()
            raise RuntimeError(f"the daemon for {self.log_path} did not start: {self.log_tail()}")
        return self

    def _start_event(self) -> Optional[str]:
        try:
            with open(self.log_path, errors="replace") as f:
                for line in f:
                    i = line.find('{"event": "start"')
                    if i >= 0:
                        return json.loads(line[i:]).get("datapath")
        except (OSError, ValueError):
            pass
        return None

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:].strip()
        except OSError:
            return ""

    def stop(self) -> Optional[int]:
        """Stopped (SIGTERM: the datapath stays, as after `argoctl run`); its exit
        status (negative: a signal)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode


def exit_with_parent(poll_s: float = 0.5) -> threading.Thread:
    """SIGTERM this process once its parent is gone: a lab killed by SIGKILL cannot
    stop the daemons it started (each in a session of its own), so they stop
    themselves. A thread watching getppid() (the orphan is re-parented), not
    PR_SET_PDEATHSIG, which fires when the parent's forking *thread* ends."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
    t = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    t.start()
    return t


def _daemon_main(args) -> int:
    import logging

    exit_with_parent()
    from argoctl import config, netlink, reload, service
    from argoctl.daemon import Daemon, Options
    service.setup_logging(logging.INFO)
    cfg = config.load(args.config)
    d = Daemon(cfg, Options(ns=args.netns, run_dir=args.run_dir, cgroup=None,
                            apply_config=args.apply, metrics_listen=""))
    d.setup()
    current = [d]
    try:
        with netlink.netns(args.netns):
            reload.run_until_signal(d, current)
    finally:
        current[0].close()
    return 0


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m argoctl.lab.processes")
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("daemon", help="a lab host's daemon (argoctl run with the lab's options)")
    d.add_argument("--config", required=True)
    d.add_argument("--netns", required=True)
    d.add_argument("--run-dir", required=True)
    d.add_argument("--apply", action="store_true", help="`up` first, as argoctl run does")
    args = p.parse_args(argv)
    os.makedirs(args.run_dir, exist_ok=True)
    return _daemon_main(args)


if __name__ == "__main__":
    sys.exit(main())
