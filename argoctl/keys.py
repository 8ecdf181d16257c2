"""WireGuard key pairs: X25519 (RFC 7748) and 0600 key files.

Private keys never appear in exceptions, logs or reprs: errors name the file,
not its content, and keys read from disk are `SecretBytes`, whose repr/str are
redacted.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import stat

KEY_LEN = 32

# Curve25519 field prime and (A - 2) / 4 for the Montgomery ladder (RFC 7748 s5).
_P = 2**255 - 19
_A24 = 121665
_BASE_U = (9).to_bytes(KEY_LEN, "little")


class SecretBytes(bytes):
    """bytes holding key material; repr/str never show the content."""

    def __repr__(self) -> str:
        return f"<secret {len(self)} bytes>"

    __str__ = __repr__


class KeyFileError(Exception):
    """A key file is missing, too open, or malformed. The message names the file only."""

    def __init__(self, message: str, hint: str = ""):
        self.message = message
        self.hint = hint
        super().__init__(f"{message} (hint: {hint})" if hint else message)


def clamp(scalar: bytes) -> int:
    """RFC 7748 scalar clamping, as `wg genkey` applies to new private keys."""
    b = bytearray(scalar)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return int.from_bytes(b, "little")


def x25519(scalar: bytes, u: bytes) -> bytes:
    """RFC 7748 X25519(k, u). Pure Python and not constant-time: fine for
    deriving a public key once on the local host, not for a network service."""
    if len(scalar) != KEY_LEN or len(u) != KEY_LEN:
        raise ValueError("X25519 inputs must be 32 bytes")
    k = clamp(scalar)
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    for t in range(254, -1, -1):
        bit = (k >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a = x2 + z2
        aa = a * a % _P
        b = x2 - z2
        bb = b * b % _P
        e = aa - bb
        c = x3 + z3
        d = x3 - z3
        da = d * a % _P
        cb = c * b % _P
        x3 = (da + cb) ** 2 % _P
        z3 = x1 * (da - cb) ** 2 % _P
        x2 = aa * bb % _P
        z2 = e * (aa + _A24 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(KEY_LEN, "little")


def generate_private_key() -> SecretBytes:
    """32 random bytes, clamped as `wg genkey` does."""
    k = clamp(os.urandom(KEY_LEN)).to_bytes(KEY_LEN, "little")
    return SecretBytes(k)


def public_key(private: bytes) -> bytes:
    return x25519(private, _BASE_U)


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
