"""SIGHUP / `systemctl reload`: re-read the config and reconcile, in the
running process.

A reload is a hitless restart without the restart: the new config is checked
exactly as `validate` checks it (a config that fails is refused, the error is
logged and the running state stays), then a new Daemon for it goes through the
same start-up as `argoctl run` (Daemon.setup: the up pipeline reconciles
tunnels, rules and tables, adding and removing peers; the pinned datapath is
adopted, not reloaded; the maps are programmed, new destinations added, removed
ones dropped). Destinations whose paths did not change keep the path sets the
maps hold and the engine starts from their choice (Daemon._adopt), so their
traffic does not move. If the new start-up fails, the up pipeline has rolled
the kernel back and the previous config is set up again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Optional

from argoctl import config, keys, preflight, service

log = logging.getLogger("argoctl.daemon")


def load_checked(path: str) -> config.Config:
    """The config at `path` as validate sees it; ConfigError otherwise."""
    cfg = config.load(path)
    gap = preflight.problem_of(cfg)
    if gap:
        raise config.ConfigError([config.Problem(path, 1, gap)])
    return cfg


def reload(current):
    """The daemon to serve next: a new one for the re-read config, or `current`
    (still set up) when the config is refused or its start-up fails."""
    from argoctl.daemon import Daemon
    path = current.cfg.path
    service.notify("RELOADING=1", f"STATUS=reloading {keys.redact(path)}")
    try:
        cfg = load_checked(path)
    except config.ConfigError as e:
        for problem in e.problems:
            log.error("reload refused, the running config stays: %s", problem)
        service.notify("READY=1", "STATUS=reload refused (invalid config); running the "
                                  "previous one")
        return current
    # Hand over: the lock stays held; what the old daemon holds open is released
    # (the new one reopens the maps and rebinds the metrics address).
    current.release_handles()
    opts = dataclasses.replace(current.opts, cleanup=False, key=None)
    nxt = Daemon(cfg, opts)
    nxt.lock = current.lock
    try:
        nxt.setup()
    except Exception as e:   # the up pipeline rolled the kernel back
        log.error("reload failed, setting up the previous config again: %s",
                  keys.redact(str(e)))
        current.setup()
        service.notify("READY=1", "STATUS=reload failed; running the previous config")
        return current
    nxt.opts.cleanup = current.opts.cleanup
    log.info('{"event": "reload", "config": %s, "destinations": %d, "peers": %d}',
             _json_str(keys.redact(path)), len(cfg.destinations), len(cfg.peers))
    return nxt


def _json_str(s: str) -> str:
    import json
    return json.dumps(s)


def run_until_signal(daemon, current: Optional[list] = None) -> None:
    """serve() until SIGTERM or SIGINT (the `argoctl run` main loop); SIGHUP
    reloads the config. `current[0]` is the daemon serving. The reload runs
    between event loops (netlink's sync API cannot run inside one); a signal
    that arrives meanwhile is kept for the next."""
    import signal
    current = current if current is not None else [daemon]
    current[:] = [daemon]
    pending = {"stop": False, "reload": False}

    def keep(sig, frame):
        pending["reload" if sig == signal.SIGHUP else "stop"] = True
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, keep)
    while True:
        if not pending["stop"] and not pending["reload"]:
            asyncio.run(_serve(current[0], pending))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, keep)       # the loop's handlers are gone with it
        if pending["stop"] or not pending["reload"]:
            service.notify("STOPPING=1")
            return
        pending["reload"] = False
        current[0] = reload(current[0])


async def _serve(daemon, pending: dict) -> None:
    import signal
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on(kind):
        pending[kind] = True
        stop.set()
    loop.add_signal_handler(signal.SIGTERM, on, "stop")
    loop.add_signal_handler(signal.SIGINT, on, "stop")
    loop.add_signal_handler(signal.SIGHUP, on, "reload")
    if pending["stop"] or pending["reload"]:    # arrived while no loop was running
        return
    await daemon.serve(stop)
