"""The compiled parts (argoctl/_echo.c: the udp probe path; argoctl/_pathcore.c:
the path estimator and score) are optional: without them argoctl makes the same
decisions in Python, at more CPU. This says which are built, once, clearly."""

from __future__ import annotations

import importlib
from typing import Optional

PARTS = {"_echo": "the compiled udp probe path", "_pathcore": "the compiled path estimator"}
HOW = ("install gcc, python3-dev and libssl-dev (scripts/setup-host.sh does) and reinstall "
       "argoctl")


def built() -> dict[str, bool]:
    out = {}
    for name in PARTS:
        try:
            importlib.import_module(f"argoctl.{name}")
            out[name] = True
        except ImportError:
            out[name] = False
    return out


def missing_message() -> Optional[str]:
    """None when everything is built, else one line saying what is not and how."""
    missing = [PARTS[n] for n, ok in built().items() if not ok]
    if not missing:
        return None
    return (f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not built: "
            f"running the Python equivalent (same decisions, more CPU); to build, {HOW}")


def version_line() -> str:
    b = built()
    parts = ", ".join(f"{n} {'built' if ok else 'NOT built'}" for n, ok in b.items())
    return f"compiled parts: {parts}"
