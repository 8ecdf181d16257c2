"""Seeded mutations of the shipped example configs, for the config fuzz tests:
delete, duplicate and swap lines, truncate, flip bytes, change a value's type,
NUL bytes and non-UTF-8 in strings and paths, key material pasted elsewhere."""

from __future__ import annotations

import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))

# A WireGuard-shaped key (base64 of 32 bytes) that must never be echoed back.
PASTED_KEY = "kB7yDqJtXJz1u7cBNzWQ1V3sYpQ0rLkV9mE2aHfT3Xc="

_VALUE = re.compile(rb"^(\s*[A-Za-z_][A-Za-z0-9_.-]*\s*=\s*)(.*)$")
_STRING = re.compile(rb'"([^"\\\n]*)"')
_TYPES = [b"1", b"-1", b"0", b"99999999999999999999", b"1.5", b"-0.0", b"nan", b"inf",
          b"true", b'"x"', b'""', b"[]", b"[1, 2]", b'["a", 1]', b"{}", b"{ a = 1 }",
          b"1979-05-27T07:32:00Z", b"07:32:00", b"0x7fffffff", b"0o777", b"-9223372036854775808",
          b'"' + PASTED_KEY.encode() + b'"', b"'''multi\nline'''"]
_JUNK = [b"\x00", b"\\u0000", b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\\ud800", b"/../",
         b"\\n", b" ", b"\t", b'"', b"'", b"=", b"[", b"]", b"#", PASTED_KEY.encode()]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def mutate_once(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    op = rng.randrange(10)
    i = rng.randrange(len(lines))
    if op == 0:                                     # delete a line
        del lines[i]
    elif op == 1:                                   # duplicate a line
        lines.insert(i, lines[i])
    elif op == 2:                                   # swap two lines
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == 3:                                   # truncate
        return data[:rng.randrange(len(data) + 1)]
    elif op == 4:                                   # flip bits of a few bytes
        b = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            if b:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    elif op in (5, 6):                              # change a value's type
        cands = [k for k, ln in enumerate(lines) if _VALUE.match(ln)]
        if cands:
            k = rng.choice(cands)
            m = _VALUE.match(lines[k])
            lines[k] = m.group(1) + rng.choice(_TYPES)
    elif op in (7, 8):                              # junk inside a string (paths included)
        cands = [(k, m) for k, ln in enumerate(lines) for m in _STRING.finditer(ln)]
        if cands:
            k, m = rng.choice(cands)
            pos = rng.randint(m.start(1), m.end(1))
            ln = lines[k]
            lines[k] = ln[:pos] + rng.choice(_JUNK) + ln[pos:]
    else:                                           # a new key with a pasted value
        lines.insert(i, rng.choice([b"name", b"address", b"tunnel", b"private_key_file",
                                    b"responder_key_file", b"metrics_listen", b"target",
                                    b"public_key", PASTED_KEY.encode(), b'"' +
                                    PASTED_KEY.encode() + b'"']) + b" = " +
                     rng.choice(_TYPES))
    return b"\n".join(lines)


def cases(seed: int, n: int):
    """n (example path, mutated bytes), deterministic for a seed; 1-3 mutations each."""
    rng = random.Random(seed)
    originals = [(p, p.read_bytes()) for p in EXAMPLES]
    for _ in range(n):
        path, data = rng.choice(originals)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            data = mutate_once(rng, data)
        yield path, data
