"""Active probes per (destination, path), asyncio, each sent with the path's fwmark.

A socket that carries path N's mark (SO_MARK) is routed by the fwmark rule of
path N, so a probe takes exactly that path whatever its destination (direct
has its own mark too). Three kinds:

- `udp`: the authenticated echo to `argoctl responder` (format in mac.py).
  One socket per (mark, family), shared by every destination on that path;
  replies are matched by EchoTracker: valid MAC, a seq we have outstanding
  with the same sent/nonce, from the address we sent to, within the timeout,
  once. Everything else is counted (malformed, forged, replayed, late) and
  ignored. With the default clock the channel is NativeUdpChannel: the same
  job compiled (argoctl/_echo.c: scheduling, MAC, sendmmsg/recvmmsg,
  matching), since at thousands of probes a second the interpreter's ~45 us
  per probe was most of the agent's CPU; UdpChannel is the fallback when the
  extension is not built, and the reference the tests hold both to.
- `icmp`: echo request. Unprivileged ping socket (SOCK_DGRAM) if the
  namespace's ping_group_range allows it, else a raw socket; IPv4 and ICMPv6.
  Unauthenticated: replies must match source, seq and a random payload.
- `tcp`: non-blocking connect to target:port. A SYN-ACK (connected) or a RST
  (refused) both prove the path reaches the host; the socket is closed at
  once with an RST (linger 0). No answer within the timeout = loss.

Destinations that measure the same thing (Config.measurement: same probe,
same path) share one stream: one probe per interval for all of them, its
results addressed to the first (`PathProber.subscribers` lists them all).

Results go to `on_result(dest, path, seq, sent_at_ns, rtt_s_or_None, now_ns)`:
rtt None means the probe was lost (timed out, or the send failed /
came back unreachable, which is reported at once). Interval per prober is
policy.probe_interval_ms +- probe_jitter, divided by `fast_divisor` while
`in_doubt(dest, path)` is true. Clock: `clock()` in ns (monotonic, injectable).

Results of a udp stream on the compiled path can skip Python altogether: when
`sink(dest, path)` returns an argoctl._pathcore.PathState (the engine's, see
Engine.native_sink), the channel feeds it directly and calls
`on_change(dest, path)` only when a result changed the path's state.
"""

from __future__ import annotations

from typing import Optional

from argoctl import config as cfgmod
from argoctl.mac import EchoKey



from argoctl.probe.results import *  # noqa: F401,F403
from argoctl.probe.channels import *  # noqa: F401,F403
from argoctl.probe.scheduler import *  # noqa: F401,F403
from argoctl.probe.results import _SO_TIMESTAMPNS  # noqa: F401
from argoctl.probe.scheduler import _echo  # noqa: F401

# -- one-shot measurement (`argoctl probe`) -----------------------------------------

def summary(p: PathProber, dest: Optional[str] = None, path: Optional[str] = None) -> dict:
    """A prober's statistics as plain values (ms), for tables and JSON; `dest` and
    `path` name the row when the stream is shared (default: its first subscriber)."""
    def ms(v):
        return None if v is None else round(v * 1000, 3)
    done = p.received + p.lost
    return {
        "destination": dest or p.dest, "path": path or p.path, "kind": p.spec.kind,
        "target": str(p.spec.target), "port": p.spec.port, "mark": p.mark,
        "sent": p.sent, "received": p.received, "lost": p.lost, "send_errors": p.errors,
        "loss": round(p.lost / done, 4) if done else None,
        "rtt_min_ms": ms(p.rtt_min), "rtt_avg_ms": ms(p.rtt_avg), "rtt_max_ms": ms(p.rtt_max),
        "state": "up" if p.received else "down",
    }


async def probe_once(cfg: cfgmod.Config, key: Optional[EchoKey], count: int,
                     interval_ms: Optional[float] = None,
                     sources: Optional[dict[int, str]] = None) -> tuple[list[dict], dict]:
    """Probe every (destination, path) of `cfg` `count` times; (summaries, rejects).
    `sources`: as the daemon's (probe/source.py), so both measure the same thing."""
    kw = {} if interval_ms is None else {"interval_ms": interval_ms}
    sched = ProbeScheduler.from_config(cfg, lambda *a: None, key=key, count=count,
                                       sources=sources, **kw)
    sched.start()
    try:
        await sched.wait_idle()
        return ([summary(p, d, path) for (d, path), p in sched.probers.items()],
                {path: dict(c) for path, c in sched.rejects().items()})
    finally:
        sched.stop()
