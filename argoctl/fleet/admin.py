"""Setting up the bus for a fleet (the operator's side, not the agent's loop):
the per-host permissions of docs/fleet.md and the two buckets.

    permissions("edge", "argoctl_members", "argoctl_legs")  # nats-server user permissions
    await create_buckets(servers, creds, members, legs, ttl_s=15, replicas=3)

Agents never create, purge or reconfigure buckets: their users may not."""

from __future__ import annotations

import asyncio
import time
from typing import Optional


def permissions(host: str, members: str, legs: str) -> dict:
    """The publish/subscribe allow lists of host `host`: it writes only its own
    keys (`$KV.<members>.<host>`, `$KV.<legs>.<host>.>`), reads everything, and
    may use the JetStream API only to look at and watch the two buckets."""
    pub = [f"$KV.{members}.{host}", f"$KV.{legs}.{host}.>", "$JS.API.INFO",
           "$JS.FC.>", "$JS.ACK.>"]
    for b in (members, legs):
        s = f"KV_{b}"
        pub += [f"$JS.API.STREAM.INFO.{s}", f"$JS.API.CONSUMER.CREATE.{s}",
                f"$JS.API.CONSUMER.CREATE.{s}.>", f"$JS.API.CONSUMER.INFO.{s}.>",
                f"$JS.API.CONSUMER.DELETE.{s}.>", f"$JS.API.DIRECT.GET.{s}.>",
                f"$JS.API.STREAM.MSG.GET.{s}"]
    sub = [f"$KV.{members}.>", f"$KV.{legs}.>", "_INBOX.>"]
    return {"publish": {"allow": pub}, "subscribe": {"allow": sub}}


async def create_buckets(servers: list[str], user: Optional[str], password: Optional[str],
                         members: str, legs: str, ttl_s: float, replicas: int = 1,
                         tls=None, timeout_s: float = 60.0) -> list[str]:
    """Create (or update to these settings) both buckets as an admin user; the
    bucket names created. Retries while a fresh cluster elects its leader."""
    import nats
    from nats.js.api import KeyValueConfig
    kw = {"user": user, "password": password} if user is not None else {}
    if tls is not None:
        kw["tls"] = tls
    refused: list[str] = []

    async def error(e):
        if "permissions violation" in str(e).lower():
            refused.append(str(e))
    nc = await nats.connect(servers, connect_timeout=5, max_reconnect_attempts=5,
                            error_cb=error, **kw)
    try:
        js = nc.jetstream(timeout=10)
        deadline = time.monotonic() + timeout_s
        for b in (members, legs):
            while True:
                try:
                    await js.create_key_value(KeyValueConfig(bucket=b, ttl=ttl_s, history=1,
                                                             replicas=replicas))
                    break
                except Exception:
                    if refused:
                        raise PermissionError(f"the server refused: {refused[0]}") from None
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
        return [members, legs]
    finally:
        await nc.close()
