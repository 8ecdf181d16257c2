"""Line numbers for values in a TOML document.

tomllib returns plain dicts without positions, but a config problem must say
file:line. `Locator` re-scans the (already tomllib-validated) text and records
the line where every table header, key and array element starts, keyed by the
same path a validator walks: ("peer", 1, "address"), ("destination", 0,
"prefixes", 2), ("destination", 0, "probe", "port"), ("node",).
"""

from __future__ import annotations

import json
import re

Path = tuple  # of str (keys) and int (array indices)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = re.compile(r"[,\]}#\n]")


class Locator:
    def __init__(self, text: str):
        self.lines: dict[Path, int] = {}
        self._s = text
        self._i = 0
        self._line = 1
        try:
            self._document()
        except (IndexError, ValueError):
            # Only ever run on text tomllib accepted; if some construct is not
            # understood, keep the positions found so far rather than fail.
            pass

    def line(self, path: Path) -> int:
        """Line of `path`, or of its nearest recorded ancestor (a missing key
        points at its table header); 1 if nothing is known."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1

    # -- scanner ---------------------------------------------------------

    def _peek(self, n: int = 1) -> str:
        return self._s[self._i:self._i + n]

    def _advance(self, n: int) -> None:
        self._line += self._s.count("\n", self._i, self._i + n)
        self._i += n

    def _skip(self, newlines: bool) -> None:
        """Skip blanks and comments (and newlines if allowed)."""
        while self._i < len(self._s):
            c = self._s[self._i]
            if c in " \t\r" or (newlines and c == "\n"):
                self._advance(1)
            elif c == "#":
                end = self._s.find("\n", self._i)
                self._advance((len(self._s) if end < 0 else end) - self._i)
            else:
                return

    def _document(self) -> None:
        current: Path = ()
        array_counts: dict[Path, int] = {}
        while True:
            self._skip(newlines=True)
            if self._i >= len(self._s):
                return
            line = self._line
            if self._peek(2) == "[[":
                self._advance(2)
                parts = self._key()
                self._skip(False)
                self._advance(2)  # ]]
                current = self._resolve(parts, array_counts, new_array=True)
                self.lines[current] = line
            elif self._peek() == "[":
                self._advance(1)
                parts = self._key()
                self._skip(False)
                self._advance(1)  # ]
                current = self._resolve(parts, array_counts, new_array=False)
                self.lines.setdefault(current, line)
            else:
                parts = self._key()
                self._skip(False)
                self._advance(1)  # =
                self._skip(False)
                self._value(current + tuple(parts))

    @staticmethod
    def _resolve(parts: list[str], counts: dict[Path, int], new_array: bool) -> Path:
        """Header key -> path, inserting the current index of every array of
        tables it passes through ([destination.probe] after [[destination]])."""
        path: list = []
        for n, part in enumerate(parts):
            path.append(part)
            key = tuple(path)
            if new_array and n == len(parts) - 1:
                counts[key] = counts.get(key, 0) + 1
                path.append(counts[key] - 1)
            elif key in counts:
                path.append(counts[key] - 1)
        return tuple(path)

    def _key(self) -> list[str]:
        parts = []
        while True:
            self._skip(False)
            c = self._peek()
            if c in "\"'":
                start = self._i
                self._string()
                parts.append(_unquote(self._s[start:self._i]))
            else:
                m = _BARE_KEY.match(self._s, self._i)
                if not m:
                    raise ValueError("key expected")
                parts.append(m.group())
                self._advance(m.end() - self._i)
            self._skip(False)
            if self._peek() != ".":
                return parts
            self._advance(1)

    def _value(self, path: Path) -> None:
        self.lines[path] = self._line
        c = self._peek()
        if c == "[":
            self._advance(1)
            index = 0
            while True:
                self._skip(newlines=True)
                if self._peek() == "]":
                    self._advance(1)
                    return
                self._value(path + (index,))
                index += 1
                self._skip(newlines=True)
                if self._peek() == ",":
                    self._advance(1)
        elif c == "{":
            self._advance(1)
            while True:
                self._skip(False)
                if self._peek() == "}":
                    self._advance(1)
                    return
                parts = self._key()
                self._skip(False)
                self._advance(1)  # =
                self._skip(False)
                self._value(path + tuple(parts))
                self._skip(False)
                if self._peek() == ",":
                    self._advance(1)
        elif c in "\"'":
            self._string()
        else:
            m = _SCALAR_END.search(self._s, self._i)
            self._advance((m.start() if m else len(self._s)) - self._i)

    def _string(self) -> None:
        q = self._peek()
        if self._peek(3) == q * 3:
            end = self._s.find(q * 3, self._i + 3)
            while q == '"' and end > 0 and _escaped(self._s, end):
                end = self._s.find(q * 3, end + 1)
            if end < 0:
                raise ValueError("unterminated string")
            end += 3
            while self._s[end:end + 1] == q:  # up to two quotes may end the content
                end += 1
            self._advance(end - self._i)
            return
        end = self._s.find(q, self._i + 1)
        while q == '"' and end > 0 and _escaped(self._s, end):
            end = self._s.find(q, end + 1)
        if end < 0:
            raise ValueError("unterminated string")
        self._advance(end + 1 - self._i)


def _escaped(s: str, i: int) -> bool:
    """True if s[i] is preceded by an odd number of backslashes."""
    n = 0
    while i - n - 1 >= 0 and s[i - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _unquote(token: str) -> str:
    if token.startswith('"'):
        return json.loads(token)
    return token[1:-1]
