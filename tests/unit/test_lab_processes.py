"""Lab daemons run in sessions of their own (argoctl.lab.processes): they must
not outlive a lab that was killed with SIGKILL and so could not stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from argoctl.lab.processes import wait_for

# the daemon's stand-in: what _daemon_main does first, then a SIGTERM handler
# that leaves a mark (the real one stops the daemon cleanly)
CHILD = """
import signal, sys, time
from argoctl.lab.processes import exit_with_parent
def term(*_):
    open(sys.argv[1], "w").write("term")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
exit_with_parent(0.05)
print("ready", flush=True)
time.sleep(60)
"""
# the lab's stand-in: starts it as DaemonProcess does (a new session)
PARENT = """
import subprocess, sys, time
p = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]],
                     start_new_session=True, stdout=subprocess.PIPE)
print(p.stdout.readline().decode().strip(), p.pid, flush=True)
time.sleep(60)
"""


def test_a_lab_daemon_stops_when_its_lab_is_killed(tmp_path):
    mark = tmp_path / "mark"
    lab = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(mark)],
                           stdout=subprocess.PIPE)
    child = None
    try:
        ready, pid = lab.stdout.readline().decode().split()
        child = int(pid)
        assert ready == "ready"
        assert not wait_for(mark.exists, 0.5)       # not while the lab lives
        lab.send_signal(signal.SIGKILL)
        lab.wait()
        assert wait_for(mark.exists, 20), "the daemon outlived its killed lab"
        assert mark.read_text() == "term"
    finally:
        if lab.poll() is None:
            lab.kill()
            lab.wait()
        if child is not None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
