"""Wall-clock time (no profiler: cProfile inflates pyroute2's many small calls
several times under TCG) of the main parts of `argoctl bench up`'s `up`, no-op `up` and `down`,
inclusive, per phase. Run it where GRE exists (the VM):
    python -m argoctl.lab.vm -- .venv/bin/python scripts/walltime_up.py [PEERS PREFIXES]
"""
import functools
import importlib
import json
import sys
import time

from argoctl import apply
from argoctl.bench import up as benchup

TARGETS = """
argoctl.apply:_current argoctl.netlink:read_owned argoctl.netlink:_owned_links
argoctl.netlink:remove_interrupted argoctl.foreign:mark_conflicts argoctl.plan:desired
argoctl.plan:diff argoctl.netlink:KernelEnv._route argoctl.netlink:_read_link
argoctl.apply:Links.apply argoctl.apply:Nft.apply argoctl.apply:Datapath.apply argoctl.apply:Maps.apply
argoctl.netlink:Applier._links_add argoctl.netlink:Applier._batch
argoctl.netlink:Applier._sysctl_set argoctl.netlink:_sysctl_write argoctl.netlink:_sysctl_read
argoctl.netlink:Applier._link_remove argoctl.netlink:Applier._index argoctl.netlink:Applier.execute
argoctl.datapath:detach argoctl.apply:Datapath.down argoctl.apply:Links.down argoctl.apply:Nft.down argoctl.apply:Maps.down
argoctl.datapath:ensure_loaded argoctl.datapath:_route_ifnames argoctl.hooks:tc_attach_all
argoctl.hooks:_ensure_clsact argoctl.hooks:_our_filters
argoctl.datapath:map_contents argoctl.datapath:program argoctl.datapath:_ifname
argoctl.nft:Client.read argoctl.nft:Client.add argoctl.nft:Client.__init__
argoctl.intent:Intents.load argoctl.intent:Intents._store
argoctl.runfiles:save_routing argoctl.runfiles:load_routing argoctl.runfiles:write_json
argoctl.rtbatch:Sender.run argoctl.rtbatch:Sender.dump argoctl.rtbatch:Sender.route_get
argoctl.rtbatch:Sender.get
argoctl.rtbatch:Sender.__init__
pyroute2:IPRoute.__init__ pyroute2:IPRoute.close
""".split()

acc: dict = {}


def _wrap(fn, name):
    @functools.wraps(fn)
    def w(*a, **kw):
        t0 = time.monotonic()
        try:
            return fn(*a, **kw)
        finally:
            s = acc.setdefault(name, [0, 0.0])
            s[0] += 1
            s[1] += time.monotonic() - t0
    return w


for t in TARGETS:
    mod, _, attr = t.partition(":")
    try:
        obj = importlib.import_module(mod)
        *owner, last = attr.split(".")
        for o in owner:
            obj = getattr(obj, o)
        setattr(obj, last, _wrap(getattr(obj, last), t.split(".")[-1] if "." not in attr else attr))
    except (AttributeError, ImportError) as e:
        print(f"(not timed: {t}: {e})")
# the names other modules imported by value
from argoctl import datapath, hooks  # noqa: E402
for n in ("_ensure_clsact", "_our_filters", "tc_attach_all"):
    setattr(datapath, n, getattr(hooks, n))

from pyroute2 import IPRoute  # noqa: E402


def _by_method(fn):
    def w(self, func, *a, **kw):
        t0 = time.monotonic()
        try:
            return fn(self, func, *a, **kw)
        finally:
            s = acc.setdefault("ipr." + func.__name__ + (f"({a[0]})" if a and isinstance(a[0], str) else ""), [0, 0.0])
            s[0] += 1
            s[1] += time.monotonic() - t0
    return w


IPRoute._run_force_sync = _by_method(IPRoute._run_force_sync)
IPRoute._run_generic_rtnl = _by_method(IPRoute._run_generic_rtnl)

_phase = ["up", "noop", "down"]


def _timing(real):
    def timed(*a, **kw):
        name = _phase.pop(0) if _phase else "extra"
        acc.clear()
        t0 = time.monotonic()
        try:
            return real(*a, **kw)
        finally:
            total = time.monotonic() - t0
            print(f"===== phase {name}: {total:.3f} s (wall, inclusive times) =====")
            for k, (n, s) in sorted(acc.items(), key=lambda kv: -kv[1][1]):
                print(f"{s:8.3f} s {n:6d}x  {k}")
            sys.stdout.flush()
    return timed


apply.up = _timing(apply.up)
apply.down = _timing(apply.down)
peers, prefixes = (int(x) for x in sys.argv[1:3]) if len(sys.argv) > 2 else (100, 10000)
for line in benchup.run(peers, prefixes, None):
    print(json.dumps(line))
