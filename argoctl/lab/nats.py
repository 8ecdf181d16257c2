"""nats-server for tests and the lab: one server or a cluster on loopback, JetStream
in a temporary directory, one NATS user per host with the permissions of
docs/fleet.md ("Permissions"), and the fleet buckets created by an admin user.

    with NatsFleet(["edge", "relay1"], size=1) as bus:     # stop() on exit, even on error
        bus.urls                     # ["nats://127.0.0.1:PORT", ...]
        bus.credentials("edge")      # path of edge's credentials file (0600)
        bus.kill(0)                  # SIGKILL one server (cluster tests)
        bus.start_server(0)          # and back

Servers listen on 127.0.0.1 (free ports picked at start), or, for a lab, inside a
lab namespace on one of its addresses (`netns=`, `address=`); every process
started here is stopped by stop(). Nothing here is used
by the agent (argoctl never imports argoctl.lab).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Iterable, Optional

from argoctl.fleet.admin import create_buckets, permissions
from argoctl.netlink import netns

NATS_SERVER = "nats-server"
MEMBERS_BUCKET = "argoctl_members"
LEGS_BUCKET = "argoctl_legs"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_permissions(host: str, members: str = MEMBERS_BUCKET,
                     legs: str = LEGS_BUCKET) -> dict:
    """The publish/subscribe allow lists of host `host` (docs/fleet.md)."""
    return permissions(host, members, legs)


def _conf_value(v) -> str:
    """A nats-server config value (its format accepts JSON for these)."""
    import json
    return json.dumps(v)


class NatsFleet:
    """`size` nats-servers (a cluster when > 1) with JetStream, users for `hosts`
    plus "admin", and the two fleet buckets (TTL `ttl_s`, replicas min(size, 3))."""

    def __init__(self, hosts: Iterable[str], size: int = 1, ttl_s: float = 15.0,
                 members: str = MEMBERS_BUCKET, legs: str = LEGS_BUCKET,
                 workdir: Optional[str] = None, create_buckets: bool = True,
                 netns: Optional[str] = None, address: str = "127.0.0.1"):
        self.hosts = list(hosts)
        self.size = size
        self.ttl_s = ttl_s
        self.members, self.legs = members, legs
        self.create = create_buckets
        self.netns, self.address = netns, address
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="argoctl-nats-")
        os.chmod(self.dir, 0o700)
        self.passwords = {h: secrets.token_hex(16) for h in [*self.hosts, "admin"]}
        self.ports = [free_port() for _ in range(size)]
        self.cluster_ports = [free_port() for _ in range(size)] if size > 1 else []
        self.procs: list[Optional[subprocess.Popen]] = [None] * size

    # -- addresses and credentials -----------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [f"nats://{self.address}:{p}" for p in self.ports]

    def credentials(self, host: str) -> str:
        """Path of `host`'s credentials file (TOML: user, password; mode 0600)."""
        path = os.path.join(self.dir, f"{host}.creds.toml")
        if not os.path.exists(path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f'user = "{host}"\npassword = "{self.passwords[host]}"\n')
        return path

    # -- servers -----------------------------------------------------------------

    def _config(self, i: int) -> str:
        users = [{"user": "admin", "password": self.passwords["admin"]}]
        users += [{"user": h, "password": self.passwords[h],
                   "permissions": host_permissions(h, self.members, self.legs)}
                  for h in self.hosts]
        store = os.path.join(self.dir, f"js{i}")
        lines = [f"server_name: n{i}", f"listen: {_conf_value(f'{self.address}:{self.ports[i]}')}",
                 f"jetstream {{ store_dir: {_conf_value(store)}, max_memory_store: 67108864,"
                 f" max_file_store: 268435456 }}",
                 f"authorization {{ users: {_conf_value(users)} }}",
                 "ping_interval: \"2s\"", "ping_max: 2"]
        if self.size > 1:
            routes = [f"nats-route://{self.address}:{p}"
                      for j, p in enumerate(self.cluster_ports) if j != i]
            listen = _conf_value(f"{self.address}:{self.cluster_ports[i]}")
            lines.append(f"cluster {{ name: argoctl-lab, listen: {listen},"
                         f" routes: {_conf_value(routes)} }}")
        path = os.path.join(self.dir, f"n{i}.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start_server(self, i: int) -> None:
        if shutil.which(NATS_SERVER) is None:
            raise RuntimeError(f"{NATS_SERVER} is not installed (make setup installs it)")
        conf = self._config(i)
        log = open(os.path.join(self.dir, f"n{i}.log"), "ab")
        argv = [NATS_SERVER, "-c", conf]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        self.procs[i] = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self._wait_listening(i)

    def _wait_listening(self, i: int, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"nats-server n{i} exited: {self.log(i)[-2000:]}")
            try:
                with netns(self.netns), \
                        socket.create_connection((self.address, self.ports[i]), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server n{i} did not listen within {timeout}s")

    def log(self, i: int) -> str:
        try:
            with open(os.path.join(self.dir, f"n{i}.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def kill(self, i: int) -> None:
        """SIGKILL server i (a crash, not a shutdown)."""
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        self.procs[i] = None

    def start(self) -> "NatsFleet":
        try:
            for i in range(self.size):
                self.start_server(i)
            if self.create:
                self.run(self._create_buckets())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
            self.procs[i] = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "NatsFleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- admin -------------------------------------------------------------------

    def run(self, coro):
        """Run an admin coroutine to completion (from a thread without a loop), in
        the servers' namespace."""
        with netns(self.netns):
            return asyncio.run(coro)

    async def admin(self):
        """A nats-py connection as the admin user (close it)."""
        import nats
        return await nats.connect(self.urls, user="admin", password=self.passwords["admin"],
                                  connect_timeout=5, max_reconnect_attempts=5,
                                  allow_reconnect=True)

    async def _create_buckets(self) -> None:
        await create_buckets(self.urls, "admin", self.passwords["admin"], self.members,
                             self.legs, self.ttl_s, replicas=min(self.size, 3))
