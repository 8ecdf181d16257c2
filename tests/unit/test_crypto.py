"""Known-answer tests of the probe MAC, HMAC-SHA256 (RFC 4231), in both
implementations that run it: mac.py (Python's OpenSSL binding) and the compiled
probe path (argoctl/_echo.c, libcrypto); the two agree on random keys and
messages. X25519's RFC 7748 vectors are in test_keys.py."""

from __future__ import annotations

import random

import pytest

from argoctl import mac
from argoctl.probe import _echo

h = bytes.fromhex

# RFC 4231 section 4: (key, data, HMAC-SHA-256); case 5 is given truncated to 128 bits.
RFC4231 = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131, b"This is a test using a larger than block-size key and a larger than "
     b"block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


@pytest.mark.parametrize("case", range(1, len(RFC4231) + 1))
def test_rfc4231_hmac_sha256_python(case):
    key, data, want = RFC4231[case - 1]
    assert mac.hmac_sha256(key, data)[:len(want) // 2] == h(want)


@pytest.mark.parametrize("case", range(1, len(RFC4231) + 1))
def test_rfc4231_hmac_sha256_compiled(case):
    key, data, want = RFC4231[case - 1]
    # twice on one keyed context: the re-initialised context must not carry state over
    first, again = _echo.hmac_sha256(key, [data, data])
    assert first[:len(want) // 2] == again[:len(want) // 2] == h(want)


def test_python_and_compiled_hmac_agree_on_random_inputs():
    rng = random.Random(4231)
    for _ in range(200):
        key = rng.randbytes(rng.choice([1, 16, 32, 63, 64, 65, 200]))
        msgs = [rng.randbytes(rng.randrange(0, 300)) for _ in range(8)]
        assert _echo.hmac_sha256(key, msgs) == [mac.hmac_sha256(key, m) for m in msgs]


def test_echo_packets_verify_across_implementations():
    # a request MAC'd by Python parses in C and the reverse is covered by
    # tests/unit/test_echo_native.py over real sockets; here: the truncated MAC
    key = mac.EchoKey(bytes(range(32)))
    req = key.request(7, 123, b"n" * 16)
    assert _echo.hmac_sha256(bytes(range(32)), [req[:mac.MAC_OFFSET]])[0][:mac.MAC_LEN] \
        == req[mac.MAC_OFFSET:]
