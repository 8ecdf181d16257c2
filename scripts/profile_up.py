"""cProfile of `argoctl bench up`'s `up` and no-op `up` (the same run as
argoctl.bench.up.run(peers, prefixes, None)), each phase apart: top entries by
cumulative and by own time. Run it where GRE exists (the VM):
    python -m argoctl.lab.vm -- .venv/bin/python scripts/profile_up.py [PEERS PREFIXES]
"""
import cProfile
import io
import json
import pstats
import sys
import time

from argoctl import apply
from argoctl.bench import up as benchup

TOP = 45
_real_up = apply.up
_phase = ["up", "noop"]


def _profiled_up(*a, **kw):
    name = _phase.pop(0) if _phase else "extra"
    prof = cProfile.Profile()
    t0 = time.monotonic()

    try:
        return prof.runcall(_real_up, *a, **kw)
    finally:
        prof.disable()
        s = io.StringIO()
        st = pstats.Stats(prof, stream=s)
        print(f"===== phase {name}: {time.monotonic() - t0:.2f} s (profiled) =====")
        for key in ("cumulative", "tottime"):
            s.seek(0); s.truncate()
            st.sort_stats(key).print_stats(TOP)
            print(f"----- {name} by {key} -----")
            print(s.getvalue())
        sys.stdout.flush()


apply.up = _profiled_up
peers, prefixes = (int(x) for x in sys.argv[1:3]) if len(sys.argv) > 2 else (100, 10000)
for line in benchup.run(peers, prefixes, None):
    print(json.dumps(line))
