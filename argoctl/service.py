"""Living under a service manager: the sd_notify protocol (READY, RELOADING,
WATCHDOG, STATUS) and log lines with a level and the wall-clock time.

sd_notify: a datagram of newline-separated KEY=VALUE to the AF_UNIX socket
named by $NOTIFY_SOCKET (a path, or '@' for the abstract namespace), as
sd_notify(3) and systemd's own protocol documentation describe it. Without
$NOTIFY_SOCKET (not under systemd, or Type= not notify) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import Optional


def _address() -> Optional[str | bytes]:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path or len(path) < 2 or path[0] not in "/@":
        return None
    return "\0" + path[1:] if path[0] == "@" else path


def notify(*fields: str) -> bool:
    """Send KEY=VALUE fields to the service manager; False if there is none or
    the send failed (never raises: the service manager is not worth a crash)."""
    addr = _address()
    if addr is None:
        return False
    data = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(data)
        return True
    except OSError as e:
        logging.getLogger("argoctl").debug("sd_notify failed: %s", e)
        return False


def watchdog_interval() -> Optional[float]:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC, as sd_watchdog_enabled
    advises), or None when no watchdog is set for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class Watchdog:
    """WATCHDOG=1 at most every interval/2... called from the loop that must stay
    alive, so a hung loop stops the pings and systemd restarts the service."""

    def __init__(self):
        self.interval = watchdog_interval()
        self._last = -1e18

    def ping(self) -> None:
        if self.interval is None:
            return
        now = time.monotonic()
        if now - self._last >= self.interval / 2:
            self._last = now
            notify("WATCHDOG=1")


# -- log lines ------------------------------------------------------------------

# syslog priorities of the logging levels (sd-daemon(3): "<N>" prefixes)
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}


class LineFormatter(logging.Formatter):
    """`2026-12-02T16:10:00.123Z warning message`; with `journal`, prefixed by the
    journald priority (`<4>`), which journald turns into the entry's priority."""

    def __init__(self, journal: bool = False):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"
        text = f"{stamp} {record.levelname.lower()} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if self.journal:
            prio = _PRIORITY.get(record.levelno, 6)
            # every line of a multi-line message keeps the priority
            text = "\n".join(f"<{prio}>{line}" for line in text.split("\n"))
        return text


def under_journal() -> bool:
    """stderr goes to the journal: systemd sets $JOURNAL_STREAM to its device:inode."""
    if os.environ.get("ARGOCTL_LOG_FORMAT") == "journal":
        return True
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
        return stream == f"{st.st_dev}:{st.st_ino}"
    except (OSError, ValueError, AttributeError):
        return False


def setup_logging(level: int = logging.INFO) -> None:
    """Root logger to stderr with LineFormatter (journal prefixes under systemd)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(journal=under_journal()))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)


def parse_line(line: str) -> tuple[str, str, str]:
    """(time, level, message) of one line LineFormatter wrote (journal prefix ok)."""
    if line.startswith("<") and ">" in line[:4]:
        line = line[line.index(">") + 1:]
    stamp, level, message = line.split(" ", 2)
    return stamp, level, message
