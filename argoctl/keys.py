"""WireGuard key pairs: X25519 (RFC 7748, from `cryptography`) and 0600 key files.

Private keys never appear in exceptions, logs or reprs: errors name the file,
not its content, and keys read from disk are `SecretBytes`, whose repr/str are
redacted.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import re
import stat

KEY_LEN = 32


# Key material as people paste it: base64 of >= 30 bytes (a WireGuard key is 44
# characters with its padding) or >= 64 hex digits. A base64 run counts only
# with both letter cases and a digit or +/ in it, so long lowercase names and
# paths stay readable.
_B64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{64,}")
REDACTED = "<redacted: looks like key material>"


def _secret_like(run: str) -> bool:
    return (any(c.isupper() for c in run) and any(c.islower() for c in run)
            and any(c.isdigit() or c in "+/" for c in run))


def redact(text: str) -> str:
    """`text` with anything that looks like key material replaced: every message
    about a config or key file goes through this, so a key pasted into the wrong
    field (or named as a file) is never echoed back."""
    text = _HEX_RUN.sub(REDACTED, text)
    return _B64_RUN.sub(lambda m: REDACTED if _secret_like(m.group()) else m.group(), text)


class SecretBytes(bytes):
    """bytes holding key material; repr/str never show the content."""

    def __repr__(self) -> str:
        return f"<secret {len(self)} bytes>"

    __str__ = __repr__


class KeyFileError(Exception):
    """A key file is missing, too open, or malformed. The message names the file only."""

    def __init__(self, message: str, hint: str = ""):
        self.message = redact(message)
        self.hint = redact(hint)
        super().__init__(f"{self.message} (hint: {self.hint})" if hint else self.message)


def clamp(scalar: bytes) -> int:
    """RFC 7748 scalar clamping, as `wg genkey` applies to new private keys."""
    b = bytearray(scalar)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return int.from_bytes(b, "little")


def x25519(scalar: bytes, u: bytes) -> bytes:
    """RFC 7748 X25519(k, u), from `cryptography` (OpenSSL; constant time).
    The scalar is clamped and the u-coordinate's top bit ignored, as RFC 7748
    says; an all-zero result (a low-order u) is an error there, a ValueError here."""
    if len(scalar) != KEY_LEN or len(u) != KEY_LEN:
        raise ValueError("X25519 inputs must be 32 bytes")
    from cryptography.hazmat.primitives.asymmetric.x25519 import (X25519PrivateKey,
                                                                  X25519PublicKey)
    private = X25519PrivateKey.from_private_bytes(bytes(scalar))
    peer = X25519PublicKey.from_public_bytes(bytes(u))
    return private.exchange(peer)


def generate_private_key() -> SecretBytes:
    """32 random bytes, clamped as `wg genkey` does."""
    k = clamp(os.urandom(KEY_LEN)).to_bytes(KEY_LEN, "little")
    return SecretBytes(k)


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a private key (what `wg pubkey` prints, decoded)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    if len(private) != KEY_LEN:
        raise ValueError("an X25519 private key has 32 bytes")
    return X25519PrivateKey.from_private_bytes(bytes(private)).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def encode(key: bytes) -> str:
    """Base64 with padding (44 characters), the format of `wg genkey`/`wg pubkey`."""
    return base64.b64encode(key).decode("ascii")


def decode(text: str) -> bytes:
    """Base64 of exactly 32 bytes -> bytes; ValueError otherwise (message holds no key)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
    if len(raw) != KEY_LEN:
        raise ValueError(f"decodes to {len(raw)} bytes, a WireGuard key has {KEY_LEN}")
    return raw


def check_key_file_mode(path: str, st: os.stat_result) -> None:
    """Refuse a secret file that others can read, or that someone else owns."""
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"key file {path} is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o})",
            f"chmod 600 {path}",
        )
    if st.st_uid not in (os.geteuid(), 0):
        raise KeyFileError(
            f"key file {path} is owned by uid {st.st_uid}, not by this user or root",
            f"chown {os.geteuid()} {path}",
        )


def read_secret_file(path: str, what: str, create_hint: str) -> bytes:
    """The raw bytes of a secret file after checking it is a regular file, mode
    0600 or stricter, owned by us or root. `what` names it in errors."""
    if "\0" in path:
        raise KeyFileError(f"{what} path contains a NUL byte", "a file name cannot hold NUL")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist", create_hint) from None
    except OSError as e:
        raise KeyFileError(f"cannot open {what} {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{what} {path} is not a regular file")
        check_key_file_mode(path, st)
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def read_private_key(path: str) -> SecretBytes:
    """Read a WireGuard private key file (base64 of 32 bytes, mode 0600 or stricter)."""
    data = read_secret_file(path, "private key file",
                            f"create it with: argoctl keygen --private-key {path}")
    try:
        return SecretBytes(decode(data.decode("ascii")))
    except (UnicodeDecodeError, ValueError) as e:
        reason = "is not ASCII" if isinstance(e, UnicodeDecodeError) else str(e)
        raise KeyFileError(
            f"private key file {path} does not hold a WireGuard private key: "
            f"content {reason}",
            "it must be one line of base64 as written by `argoctl keygen` or `wg genkey`",
        ) from None


def write_new_file(path: str, data: bytes, mode: int, force: bool = False) -> None:
    """Create `path` with `mode` from the first byte (never a moment world-readable).
    Without force an existing file is an error; with force it is replaced atomically."""
    target = path
    if force:
        directory = os.path.dirname(os.path.abspath(path))
        target = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # umask may have cleared bits we want (never added any)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(target)
        raise
    os.close(fd)
    if force:
        try:
            os.replace(target, path)
        except BaseException:
            os.unlink(target)
            raise


def ensure_private_key(path: str, create: bool = True) -> tuple[SecretBytes, bool]:
    """The WireGuard private key at `path`, created (0600) when the file does not
    exist yet, as tailscaled creates its node key: (key, created). With
    create=False (a dry run) a missing file yields a throw-away key, not written."""
    if "\0" not in path and not os.path.lexists(path):
        if not create:
            return generate_private_key(), True
        try:
            write_key_pair(path)
        except FileExistsError:       # another process made it just now: read theirs
            pass
        except OSError as e:
            raise KeyFileError(f"cannot create private key file {path}: {e.strerror}") from None
        else:
            return read_private_key(path), True
    return read_private_key(path), False


def write_key_pair(private_path: str, public_path: str | None = None,
                   force: bool = False) -> bytes:
    """Generate a key pair, write the private key (0600) and optionally the
    public key (0644); return the public key. FileExistsError without force."""
    if not force:
        for p in (private_path, public_path):
            if p and os.path.lexists(p):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), p)
    private = generate_private_key()
    public = public_key(private)
    write_new_file(private_path, (encode(private) + "\n").encode(), 0o600, force)
    if public_path:
        try:
            write_new_file(public_path, (encode(public) + "\n").encode(), 0o644, force)
        except BaseException:
            if not force:  # don't leave half a pair behind (with force the old one is gone)
                os.unlink(private_path)
            raise
    return public


# Old private names, still used by lab/configs.py; prefer clamp / write_new_file.
_clamp = clamp
_write_new = write_new_file
