"""Where one node's things live: its network namespace, its bpffs pin directory
and its run-state directory (lock, state.json, saved sysctls, journal).

Every command (`up`, `run`, `status`, `explain`, `down`) and the lab find them
here and nowhere else, so whichever command runs, and however it entered the
namespace (`--netns NAME` or `ip netns exec NAME`), it meets the same datapath
and the same lock: one datapath per network namespace.

- The host's own (initial) namespace: pins under /sys/fs/bpf/argoctl, state
  under /run/argoctl.
- A named namespace NAME: /sys/fs/bpf/argoctl-NAME and /run/argoctl/netns/NAME.
  Inside `ip netns exec`, the namespace's name is found by its inode in
  /run/netns; an unnamed one is called `ns<inode>`.

`ip netns exec` gives the command a mount namespace of its own with a fresh
sysfs, where /sys/fs/bpf is not the host's bpffs: pins made there would vanish
with the process. The pins then go through pid 1's root
(/proc/1/root/sys/fs/bpf), or that of the nearest ancestor process that still
sees the host's bpffs (bpffs_root).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

from argoctl import names

BPF_FS_MAGIC = 0xCAFE4A11
BPFFS = "/sys/fs/bpf"
HOST_BPFFS = "/proc/1/root/sys/fs/bpf"
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
LOCK_FILE = names.LOCK_FILE


class Refused(Exception):
    """Not done, with a message for the user (nothing was changed)."""

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@contextmanager
def netns(name: Optional[str]):
    """Run the body with this thread inside network namespace `name` (None: stay).
    Sockets (netlink, nft, WireGuard) and /proc/sys/net opened inside belong to it."""
    if name is None:
        yield
        return
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"{NETNS_DIR}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(back)
    finally:
        os.close(back)


def default_run_dir() -> str:
    return os.environ.get("ARGOCTL_RUN_DIR") or names.RUN_DIR   # tests point it elsewhere


def fs_magic(path: str) -> int:
    """f_type of statfs(2) (os.statvfs does not expose it)."""
    buf = ctypes.create_string_buffer(128)   # struct statfs; f_type is the first long
    if _libc.statfs(path.encode(), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs {path}: {os.strerror(err)}")
    return int.from_bytes(buf.raw[:8], "little")


def _is_bpffs(path: str) -> bool:
    try:
        return fs_magic(path) == BPF_FS_MAGIC
    except OSError:
        return False


def _ancestors() -> list[int]:
    out, pid = [], os.getppid()
    while pid > 1 and len(out) < 32:
        out.append(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def bpffs_root() -> str:
    """The host's bpffs as this process can reach it (see the module doc): our own
    /sys/fs/bpf if it is one; else through the root of pid 1 or, where that is
    not ours to see (containers, sandboxes), of the nearest ancestor whose
    /sys/fs/bpf is a bpffs (the shell that ran `ip netns exec`)."""
    if _is_bpffs(BPFFS):
        return BPFFS
    for pid in [1, *_ancestors()]:
        path = HOST_BPFFS if pid == 1 else f"/proc/{pid}/root{BPFFS}"
        if _is_bpffs(path):
            return path
    return BPFFS      # none mounted anywhere: datapath.ensure_bpffs mounts one


def in_init_netns() -> bool:
    me = os.stat("/proc/thread-self/ns/net").st_ino
    try:
        return me == os.stat("/proc/1/ns/net").st_ino
    except OSError:   # pid 1 hidden (containers): a named namespace is not the host's
        return _named(me) is None


def _named(inode: int) -> Optional[str]:
    try:
        entries = sorted(os.listdir(NETNS_DIR))
    except OSError:
        return None
    for e in entries:
        try:
            if os.stat(os.path.join(NETNS_DIR, e)).st_ino == inode:
                return e
        except OSError:
            continue
    return None


def namespace_key(ns: Optional[str] = None) -> Optional[str]:
    """The name files of namespace `ns` (None: the current one) are kept under;
    None for the host's own namespace."""
    if ns is not None:
        return ns
    if in_init_netns():
        return None
    inode = os.stat("/proc/thread-self/ns/net").st_ino
    return _named(inode) or f"ns{inode}"


@dataclass(frozen=True)
class Home:
    ns: Optional[str]          # namespace to enter for netlink (None: stay in the current one)
    key: Optional[str]         # its name for files; None: the host's own namespace
    run_dir: str
    bpffs: str = BPFFS

    @property
    def pin_dir(self) -> str:
        base = os.path.join(self.bpffs, os.path.basename(names.BPF_PIN_DIR))
        return base if self.key is None else f"{base}-{self.key}"

    @property
    def state_dir(self) -> str:
        return self.run_dir if self.key is None else os.path.join(self.run_dir, "netns", self.key)


def locate(ns: Optional[str] = None, run_dir: Optional[str] = None) -> Home:
    """The home of the node in namespace `ns` (None: the one this process is in)."""
    return Home(ns=ns, key=namespace_key(ns), run_dir=run_dir or default_run_dir(),
                bpffs=bpffs_root())


def pin_dir(ns: Optional[str] = None) -> str:
    return locate(ns).pin_dir


COMMANDS = ("run", "up", "down")


def _holder(fd: int) -> tuple[str, Optional[str]]:
    """(pid, command) a lock file says; "?" and None where it is damaged."""
    held = os.pread(fd, 64, 0).decode(errors="replace").split()
    pid = held[0] if held and held[0].isdigit() else "?"
    cmd = held[1] if len(held) > 1 and held[1] in COMMANDS else None
    return pid, cmd


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class InstanceLock:
    """An exclusive flock on `<state dir>/argoctl.pid` holding "pid command". The
    kernel drops it when the process dies, so a crash never blocks a restart.
    `run` holds it while it lives, `up` and `down` for their duration: so `up`
    never builds a second datapath beside a running daemon's.

    The file is written like every run file (runfiles.write_atomic): the holder
    flocks the file in place, then replaces it with a new one it has flocked
    before the rename. Whoever opened the old file re-checks, after its own
    flock, that it is still the one at the path."""

    def __init__(self, directory: str, command: str = "run"):
        self.path = os.path.join(directory, LOCK_FILE)
        self.command = command
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        if self.fd is not None:      # held already (a reload hands the lock over)
            return
        from argoctl import runfiles
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                pid, cmd = _holder(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise Refused(f"another argoctl {cmd or 'process'} (pid {pid}) holds "
                                  f"{self.path}") from None
                raise
            if _same_file(fd, self.path):
                break
            os.close(fd)            # replaced while we opened it: lock the one there now
        try:
            self.fd = runfiles.write_atomic(self.path, f"{os.getpid()} {self.command}\n",
                                            lock=True)
        finally:
            os.close(fd)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)   # releases the flock; the file stays (harmless)
            self.fd = None

    def holder(self) -> Optional[str]:
        """The command holding the lock now ("run", "up", ...; "run" if its file
        does not say), or None."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:
                    return _holder(fd)[1] or "run"
                fcntl.flock(fd, fcntl.LOCK_UN)
                if _same_file(fd, self.path):
                    return None
            finally:
                os.close(fd)
        return None
