"""The connection to the fleet's NATS servers (nats-py), in the daemon's event loop.

    bus = Bus(servers, user, password, members="argoctl_members", legs="argoctl_legs",
              on_member=view_update, on_legs=view_update)
    await bus.start()          # never raises: connects in the background, retries
    bus.healthy                # connected, both buckets watched
    await bus.put_legs({key: raw, ...})    # one batch, acknowledged by JetStream
    await bus.stop()

Reconnects are nats-py's (every server of the list, forever); after a reconnect
both watchers are made again, which replays every current value, so nothing
published while we were away is missed. `healthy` drops the moment the client
sees the connection go (and at the latest after its pings fail: ping_interval x
max_outstanding_pings), which is when the agent returns to probing everything
itself. Credentials never appear in the log or in errors we keep.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Callable, Optional

log = logging.getLogger("argoctl.fleet")

OnUpdate = Callable[[str, Optional[bytes]], None]     # (key, value or None if deleted)
PING_INTERVAL_S = 2
MAX_PINGS = 2
RETRY_S = 2.0
REWATCH_S = 0.5


class Bus:
    def __init__(self, servers: list[str], user: Optional[str], password: Optional[str], *,
                 members: str, legs: str, on_member: OnUpdate, on_legs: OnUpdate,
                 tls: Optional[ssl.SSLContext] = None, connect_timeout_s: float = 2.0,
                 name: str = "argoctl", stall_s: Optional[float] = None,
                 legs_of: Optional[tuple[str, ...]] = None):
        """`legs_of`: the hosts whose legs to watch, one filtered watcher each
        (`<host>.>`: a server 2.9 consumer has one filter subject); None: the whole
        bucket. `stall_s`: remake the watchers when neither bucket delivered anything for
        this long while connected (the agent's own membership record comes back
        every publish interval, so silence means a watcher whose consumer died
        with a cluster member; None: no such check)."""
        self.servers = list(servers)
        self._user, self._password = user, password
        self.tls = tls
        self.members, self.legs = members, legs
        self.on_member, self.on_legs = on_member, on_legs
        self.legs_of = None if legs_of is None else tuple(legs_of)
        self.connect_timeout_s = connect_timeout_s
        self.name = name
        self.nc = None
        self.kv: dict[str, object] = {}
        self._watchers: list = []
        self._tasks: list[asyncio.Task] = []
        self._runner: Optional[asyncio.Task] = None
        self._rewatch: Optional[asyncio.Event] = None
        self.watching = False
        self.state = "connecting"
        self.since = time.monotonic()
        self.last_error: Optional[str] = None
        self.updates = 0
        self.stall_s = stall_s
        self.last_update = time.monotonic()
        self.rewatches = 0
        self.writes = 0
        self.write_errors = 0
        self.disconnects = 0
        self.refused = 0                 # writes the server refused (permissions)
        self.last_refused: Optional[str] = None
        self.server: Optional[str] = None
        self._stopping = False

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    @property
    def healthy(self) -> bool:
        """Connected and both buckets watched."""
        return self.connected and self.watching

    def _set(self, state: str, error: Optional[str] = None) -> None:
        if state != self.state:
            self.state, self.since = state, time.monotonic()
        if error is not None:
            self.last_error = error

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._rewatch = asyncio.Event()
        self._runner = asyncio.create_task(self._run(), name="argoctl-fleet-bus")

    async def _run(self) -> None:
        """Connect (retrying until it works), then keep the watchers alive."""
        while not self._stopping:
            try:
                await self._connect()
                break
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._set("unreachable", safe_error(e))
                await asyncio.sleep(RETRY_S)
        while not self._stopping:
            self._rewatch.clear()
            try:
                await self._watch()
                self._set("connected")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.watching = False
                self._set("degraded", f"watch: {safe_error(e)}")
                await asyncio.sleep(REWATCH_S)
                continue
            await self._until_rewatch()
            self.rewatches += 1

    async def _until_rewatch(self) -> None:
        """Until a reconnect or a failed watcher asks for new watchers, or (with
        stall_s) the watchers went silent while the connection is up."""
        while not self._rewatch.is_set():
            timeout = None
            if self.stall_s is not None:
                timeout = max(0.1, self.last_update + self.stall_s - time.monotonic())
            try:
                await asyncio.wait_for(self._rewatch.wait(), timeout)
            except asyncio.TimeoutError:
                if self.connected and time.monotonic() - self.last_update >= self.stall_s:
                    self._set("stalled", "no update from the watchers: watching again")
                    return

    async def _connect(self) -> None:
        import nats

        async def disconnected():
            self.watching = False
            self.disconnects += 1
            self._set("disconnected", "connection lost")

        async def reconnected():
            self.server = _url(self.nc)
            self._rewatch.set()     # make the watchers again: replays current values

        async def error(e):
            text = safe_error(e)
            if "permissions violation" in text.lower():
                self.refused += 1
                self.last_refused = text
                log.warning("fleet bus: %s", text)
            else:
                self.last_error = text

        kw = dict(servers=self.servers, name=self.name, connect_timeout=self.connect_timeout_s,
                  allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                  ping_interval=PING_INTERVAL_S, max_outstanding_pings=MAX_PINGS,
                  disconnected_cb=disconnected, reconnected_cb=reconnected, error_cb=error)
        if self._user is not None:
            kw.update(user=self._user, password=self._password)
        if self.tls is not None:
            kw["tls"] = self.tls
        self.nc = await nats.connect(**kw)
        self.server = _url(self.nc)
        # (the buckets are looked up by _watch, which retries: a missing bucket
        # leaves the bus "degraded", connected once, not reconnecting in a loop)

    async def _watch(self) -> None:
        """(Re)make both watchers; the old ones go only once the new ones run, so a
        failed attempt (a cluster still electing a stream leader) loses nothing."""
        from nats.js.errors import BucketNotFoundError
        js = self.nc.jetstream(timeout=self.connect_timeout_s)
        kv = {}
        for b in (self.members, self.legs):
            try:
                kv[b] = await js.key_value(b)
            except BucketNotFoundError:
                raise LookupError(f"bucket {b} not found (create it: argoctl fleet init)") \
                    from None
        watchers, tasks = [], []
        try:
            for bucket, cb, keys in self._watches():
                w = await (kv[bucket].watchall() if keys is None else kv[bucket].watch(keys))
                watchers.append(w)
                tasks.append(asyncio.create_task(self._pump(w, cb, bucket)))
        except BaseException:
            for t in tasks:
                t.cancel()
            for w in watchers:
                await _quietly(w.stop())
            raise
        old_tasks, old_watchers = self._tasks, self._watchers
        self.kv, self._tasks, self._watchers = kv, tasks, watchers
        self.last_update = time.monotonic()
        for t in old_tasks:
            t.cancel()
        for w in old_watchers:
            await _quietly(w.stop())
        self.watching = True

    def _watches(self) -> list[tuple[str, OnUpdate, Optional[str]]]:
        """(bucket, callback, key filter or None for all): every member; the legs
        of every host, or of `legs_of` only."""
        out = [(self.members, self.on_member, None)]
        if self.legs_of is None:
            out.append((self.legs, self.on_legs, None))
        else:
            out.extend((self.legs, self.on_legs, f"{h}.>") for h in self.legs_of)
        return out

    async def _pump(self, watcher, cb: OnUpdate, bucket: str) -> None:
        try:
            async for e in watcher:
                if e is None:
                    continue         # end of the initial values
                self.updates += 1
                self.last_update = time.monotonic()
                deleted = e.operation in ("DEL", "PURGE")
                try:
                    cb(e.key, None if deleted else (e.value or b""))
                except Exception:
                    log.exception("fleet bus: handling %s/%s failed", bucket, e.key)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.watching = False
            self._set("degraded", f"watch {bucket}: {safe_error(e)}")
            if self._rewatch is not None:
                self._rewatch.set()

    async def stop(self) -> None:
        self._stopping = True
        if self._runner is not None:
            self._runner.cancel()
        for t in self._tasks:
            t.cancel()
        for t in [self._runner, *self._tasks]:
            if t is not None:
                try:
                    await t
                except BaseException:
                    pass
        self._tasks = []
        self.watching = False
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.close(), 3)
            except Exception:
                pass
        self._set("stopped")

    # -- writing ---------------------------------------------------------------------

    async def _put(self, bucket: str, items: dict[str, bytes], timeout: float) -> int:
        kv = self.kv.get(bucket)
        if kv is None or not self.connected:
            return 0

        fut = asyncio.gather(*(kv.put(k, v) for k, v in items.items()), return_exceptions=True)
        # (a cancelled batch's outcome is nobody's business: do not warn about it)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            res = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self.write_errors += len(items)
            self.last_error = f"write: no acknowledgement within {timeout:g} s"
            return 0
        ok = 0
        for r in res:
            if isinstance(r, BaseException):
                self.write_errors += 1
                self.last_error = f"write: {safe_error(r)}"
            else:
                ok += 1
        self.writes += ok
        return ok

    async def put_member(self, key: str, raw: bytes, timeout: float = 5.0) -> int:
        return await self._put(self.members, {key: raw}, timeout)

    async def put_legs(self, items: dict[str, bytes], timeout: float = 5.0) -> int:
        """Write a batch of legs values (acknowledged concurrently): how many landed."""
        return await self._put(self.legs, items, timeout)


async def _quietly(coro, timeout: float = 2.0) -> None:
    try:
        await asyncio.wait_for(coro, timeout)
    except BaseException:
        pass


def _url(nc) -> Optional[str]:
    try:
        u = nc.connected_url
        return f"{u.scheme}://{u.hostname}:{u.port}" if u else None
    except Exception:
        return None


def safe_error(e: BaseException) -> str:
    """An error as text without credentials (nats-py may put a URL with user:pass in it)."""
    import re
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return re.sub(r"//[^/@\s]*@", "//***@", text)[:300]
