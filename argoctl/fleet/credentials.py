"""A host's NATS credentials file: TOML with `user` and `password`, mode 0600 or
stricter, owned by us or root (keys.read_secret_file's checks). Errors name the
file and what is wrong, never its content."""

from __future__ import annotations

import tomllib

from argoctl.keys import KeyFileError, read_secret_file


class Credentials:
    __slots__ = ("user", "_password")

    def __init__(self, user: str, password: str):
        self.user = user
        self._password = password

    @property
    def password(self) -> str:
        return self._password

    def __repr__(self) -> str:      # never the password, even in a traceback
        return f"Credentials(user={self.user!r}, password=***)"


def read_credentials(path: str) -> Credentials:
    data = read_secret_file(path, "fleet credentials file",
                            "write `user = \"NAME\"` and `password = \"...\"` into it, "
                            f"then chmod 600 {path}")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise KeyFileError(f"fleet credentials file {path} is not TOML",
                           'it must hold user = "NAME" and password = "..."') from None
    user, password = doc.get("user"), doc.get("password")
    extra = sorted(set(doc) - {"user", "password"})
    if not isinstance(user, str) or not user or not isinstance(password, str) or not password:
        raise KeyFileError(f"fleet credentials file {path} needs a non-empty string "
                           "'user' and 'password'")
    if extra:
        raise KeyFileError(f"fleet credentials file {path}: unknown keys {extra}",
                           "only user and password")
    return Credentials(user, password)
