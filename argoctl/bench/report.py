"""How every benchmark reports: one JSON object per line on stdout."""

from __future__ import annotations

import json
import sys


def emit(record: dict) -> None:
    """Print one benchmark result as a single JSON line (flushed: benches are long)."""
    sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()
