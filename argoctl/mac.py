"""The authenticated UDP echo between a prober and `argoctl responder`:
key files, wire format and MAC.

Wire format (integers big-endian). Request and reply are both exactly 64
bytes, so the responder never sends more than it received (no amplification):

    off len field
      0   2 magic    b"AP"
      2   1 version  1
      3   1 type     1 = request, 2 = reply
      4   4 key id   first 4 bytes of SHA-256(key): which key, reveals nothing of it
      8   8 seq      u64, prober's sequence number
     16   8 sent     u64, prober's send timestamp in ns (its own clock; opaque to the responder)
     24  16 nonce    random per request
     40   8 rx       request: 0; reply: responder's receive time (ns since the epoch)
     48  16 mac      HMAC-SHA256(key, bytes 0..47), first 16 bytes

A reply is the request's bytes 0..39 with type 2, `rx` filled in and a fresh
MAC. Because the MAC covers the echoed seq, sent and nonce, a host without the
key can neither forge a reply nor turn a reply to one request into a reply to
another; the type byte keeps a request from being reflected as a reply. The
prober (probe.EchoTracker) further accepts a reply only for a seq it has
outstanding, whose sent/nonce match, once.

Key file: one line, base64 of at least 32 random bytes, mode 0600 or stricter.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from typing import NamedTuple

from argoctl.keys import KeyFileError, SecretBytes, read_secret_file

MAGIC = b"AP"
VERSION = 1
REQUEST = 1
REPLY = 2
SIZE = 64
MAC_OFFSET = 48
MAC_LEN = 16
NONCE_LEN = 16
MIN_KEY_BYTES = 32

# magic, version, type, key id, seq, sent, nonce, rx
_BODY = struct.Struct("!2sBBIQQ16sQ")
assert _BODY.size == MAC_OFFSET
_HEAD = struct.Struct("!2sBBI")


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) from the standard library's OpenSSL binding
    (hmac.digest runs OpenSSL's one-shot HMAC); the compiled path uses the
    same libcrypto (argoctl/_echo.c). RFC 4231 vectors: tests/unit/test_crypto.py."""
    return hmac.digest(key, msg, "sha256")


class WireError(Exception):
    """A datagram that is not an acceptable echo packet. `reason` is a counter
    name: malformed (size, magic, version, type), wrong_key (key id), bad_mac."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class Echo(NamedTuple):
    type: int
    seq: int
    sent: int
    nonce: bytes
    rx: int


class EchoKey:
    """A MAC key and its id. repr never shows the key."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"an echo key needs at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        self._key = bytes(key)
        self.key_id = int.from_bytes(hashlib.sha256(self._key).digest()[:4], "big")

    def __repr__(self) -> str:
        return f"<EchoKey id={self.key_id:08x}>"

    def mac(self, body: bytes) -> bytes:
        return hmac_sha256(self._key, body)[:MAC_LEN]

    def native_channel(self, fd: int, family: int, timeout_ns: int, jitter: float, seed: int):
        """The compiled echo channel (argoctl._echo.Channel) on socket `fd`, keyed
        with this key: the key goes to it and nowhere else."""
        from argoctl import _echo
        return _echo.Channel(fd, family, bytes(self._key), self.key_id, timeout_ns, jitter, seed)

    def request(self, seq: int, sent: int, nonce: bytes) -> bytes:
        body = _BODY.pack(MAGIC, VERSION, REQUEST, self.key_id, seq, sent, nonce, 0)
        return body + self.mac(body)

    def parse(self, data: bytes) -> Echo:
        """Check size, header, key id and MAC; WireError(reason) if any fails."""
        if len(data) != SIZE:
            raise WireError("malformed")
        magic, version, kind, key_id = _HEAD.unpack_from(data)
        if magic != MAGIC or version != VERSION or kind not in (REQUEST, REPLY):
            raise WireError("malformed")
        if key_id != self.key_id:
            raise WireError("wrong_key")
        body = data[:MAC_OFFSET]
        if not hmac.compare_digest(self.mac(body), data[MAC_OFFSET:]):
            raise WireError("bad_mac")
        _, _, kind, _, seq, sent, nonce, rx = _BODY.unpack(body)
        return Echo(kind, seq, sent, nonce, rx)

    def reply(self, request: Echo, rx: int) -> bytes:
        """The reply to a parsed, verified request."""
        body = _BODY.pack(MAGIC, VERSION, REPLY, self.key_id, request.seq, request.sent,
                          request.nonce, rx)
        return body + self.mac(body)


def read_key(path: str) -> EchoKey:
    """Read an echo key file (base64, >= 32 bytes, mode 0600 or stricter)."""
    data = read_secret_file(path, "probe key file",
                            f"create it with: argoctl responder --genkey {path}")
    try:
        raw = SecretBytes(base64.b64decode(data.strip(), validate=True))
    except (binascii.Error, ValueError):
        raise KeyFileError(f"probe key file {path} is not base64",
                           f"regenerate it with: argoctl responder --genkey {path}") from None
    if len(raw) < MIN_KEY_BYTES:
        raise KeyFileError(f"probe key file {path} holds {len(raw)} bytes, "
                           f"at least {MIN_KEY_BYTES} are needed",
                           f"regenerate it with: argoctl responder --genkey {path}")
    return EchoKey(raw)


def write_key(path: str) -> None:
    """Create a new key file (0600 from the first byte); FileExistsError if it exists."""
    data = base64.b64encode(os.urandom(MIN_KEY_BYTES)) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
