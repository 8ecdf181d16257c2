"""What `up` and `run` derive from a config before they touch the host, done
without touching it: the plan's desired kernel state, the engine, the probe
streams, the datapath's map entries, the metrics address.

`validate` runs it after the config checks and `run` before its first change,
so a config that `validate` accepts is one `up` and `run` accept: anything here
that refuses a config the checks passed is a gap in the checks
(tests/unit/test_config_agreement.py holds them in step). What depends on the
host (underlay routes, interfaces, the kernel) is not decided here.
"""

from __future__ import annotations

import time
from typing import Optional

from argoctl.config import Config

# The underlay MTU assumed for planning without a host (Ethernet's); `up` uses
# the route's real MTU.
PLANNING_MTU = 1500


class PreflightError(Exception):
    """The config passed the checks but `up` or `run` would refuse it: `stage`
    says which step (plan, engine, probes, datapath, metrics)."""

    def __init__(self, stage: str, message: str):
        self.stage = stage
        super().__init__(f"{stage}: {message}")


class OfflineEnv:
    """plan.Env without a host: a fixed underlay MTU; the WireGuard key as `up`
    reads it, or a throw-away one when the file does not exist yet (`up`
    creates it, see keys.ensure_private_key)."""

    def underlay_mtu(self, address) -> int:
        return PLANNING_MTU

    def private_key(self, path: str) -> bytes:
        import os
        from argoctl import keys
        if not os.path.lexists(path):
            return keys.generate_private_key()
        return keys.read_private_key(path)

    def public_key(self, private: bytes) -> str:
        from argoctl import keys
        return keys.encode(keys.public_key(private))


def check(cfg: Config, key=None) -> None:
    """Raise PreflightError if `up` or `run` would refuse `cfg` for a reason the
    config alone decides. `key`: the probe key run would use (None: a stand-in
    when the config names one)."""
    from argoctl import datapath, keys, maps, metrics, plan
    from argoctl.engine import Engine

    def stage(name, fn):
        try:
            return fn()
        except (ValueError, KeyError, TypeError, OverflowError, plan.PlanError,
                keys.KeyFileError) as e:
            raise PreflightError(name, str(e) or type(e).__name__) from None

    stage("plan", lambda: plan.desired(cfg, OfflineEnv()))
    stage("engine", lambda: Engine.from_config(cfg, clock=time.monotonic))

    def pathsets():
        for dest_id, paths in datapath.config_pathsets(cfg).items():
            maps.encode_pathset(paths)
        for d in cfg.destinations:
            for p in d.prefixes:
                maps.encode_prefix(str(p))
    stage("datapath", pathsets)
    stage("probes", lambda: _probes(cfg, key))
    if cfg.policy.metrics_listen:
        stage("metrics", lambda: metrics.parse_listen(cfg.policy.metrics_listen))


def _probes(cfg: Config, key) -> None:
    from argoctl import mac
    from argoctl.probe import ProbeScheduler
    needs_key = any(d.probe and d.probe.kind == "udp" for d in cfg.destinations)
    if needs_key and key is None:
        if not cfg.policy.responder_key_file:
            raise ValueError("udp probes need policy.responder_key_file")
        key = mac.EchoKey(bytes(mac.MIN_KEY_BYTES))   # a stand-in: the file is checked apart
    # sockets are opened by start(), never here
    ProbeScheduler.from_config(cfg, lambda *a: None, key=key, native=False)


def problem_of(cfg: Config) -> Optional[str]:
    """check() as a message, or None."""
    try:
        check(cfg)
    except PreflightError as e:
        return str(e)
    return None
