"""WireGuard keys: X25519 against RFC 7748 and wireguard-tools, key files, keygen."""

import base64
import os
import stat
import subprocess

import pytest
from click.testing import CliRunner

from argoctl import keys
from argoctl.cli import cli

h = bytes.fromhex


def test_rfc7748_x25519_vector():
    # RFC 7748 section 5.2, both test vectors (the second has u's top bit set: ignored)
    k = h("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = h("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    assert keys.x25519(k, u) == h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    k = h("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d")
    u = h("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493")
    assert keys.x25519(k, u) == h("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")


def test_rfc7748_iterated():
    # RFC 7748 section 5.2: k = u = 9, then k, u = X25519(k, u), k
    k = u = (9).to_bytes(32, "little")
    for i in range(1000):
        k, u = keys.x25519(k, u), k
        if i == 0:
            assert k == h("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
    assert k == h("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")


def test_rfc7748_diffie_hellman():
    # RFC 7748 section 6.1
    alice = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    alice_pub = keys.public_key(alice)
    bob_pub = keys.public_key(bob)
    assert alice_pub == h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert bob_pub == h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert keys.x25519(alice, bob_pub) == keys.x25519(bob, alice_pub) == shared


def wg_pubkey(private_b64: str) -> str:
    return subprocess.run(["wg", "pubkey"], input=private_b64 + "\n", capture_output=True,
                          text=True, check=True).stdout.strip()


def test_public_key_matches_wg_pubkey():
    for _ in range(5):
        private = keys.generate_private_key()
        assert keys.encode(keys.public_key(private)) == wg_pubkey(keys.encode(private))
    genkey = subprocess.run(["wg", "genkey"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert keys.encode(keys.public_key(keys.decode(genkey))) == wg_pubkey(genkey)


def test_generated_private_key_is_clamped_like_wg_genkey():
    for _ in range(20):
        k = keys.generate_private_key()
        assert len(k) == 32 and k[0] & 7 == 0 and k[31] & 0x80 == 0 and k[31] & 0x40


def test_encode_decode():
    raw = os.urandom(32)
    text = keys.encode(raw)
    assert len(text) == 44 and keys.decode(text) == raw and keys.decode(text + "\n") == raw
    for bad in ("", "not base64!", base64.b64encode(b"x" * 31).decode(),
                base64.b64encode(b"x" * 33).decode()):
        with pytest.raises(ValueError):
            keys.decode(bad)


def test_secret_bytes_are_redacted(tmp_path):
    path = tmp_path / "k"
    private = keys.generate_private_key()
    path.write_text(keys.encode(private) + "\n")
    path.chmod(0o600)
    loaded = keys.read_private_key(str(path))
    assert loaded == private
    for text in (repr(loaded), str(loaded), f"{loaded}", repr([loaded])):
        assert text == "<secret 32 bytes>" or "<secret 32 bytes>" in text
        assert keys.encode(private)[:12] not in text and private.hex()[:12] not in text


def key_file(tmp_path, content: bytes, mode: int = 0o600):
    path = tmp_path / "wg.key"
    path.write_bytes(content)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_read_private_key_refuses_open_modes(tmp_path, mode):
    secret = keys.encode(keys.generate_private_key())
    path = key_file(tmp_path, secret.encode(), mode)
    with pytest.raises(keys.KeyFileError) as e:
        keys.read_private_key(path)
    assert path in str(e.value) and f"{mode:04o}" in str(e.value)
    assert e.value.hint == f"chmod 600 {path}"
    assert secret not in str(e.value)


@pytest.mark.parametrize("content, fragment", [
    (b"", "decodes to 0 bytes"),
    (b"!!!!\n", "not valid base64"),
    (base64.b64encode(b"k" * 31) + b"\n", "decodes to 31 bytes"),
    (b"\xff\xfe\n", "is not ASCII"),
])
def test_read_private_key_rejects_bad_content_without_echoing_it(tmp_path, content, fragment):
    path = key_file(tmp_path, content)
    with pytest.raises(keys.KeyFileError) as e:
        keys.read_private_key(path)
    assert path in str(e.value) and fragment in str(e.value)
    if content.strip():
        assert content.strip().decode("latin-1") not in str(e.value)


def test_read_private_key_refuses_a_file_owned_by_someone_else(tmp_path):
    path = key_file(tmp_path, keys.encode(keys.generate_private_key()).encode())
    os.chown(path, 65534, 65534)  # the suite runs as root (issue 2: make test)
    with pytest.raises(keys.KeyFileError, match="owned by uid 65534"):
        keys.read_private_key(path)


def test_read_private_key_missing_and_directory(tmp_path):
    with pytest.raises(keys.KeyFileError, match="does not exist"):
        keys.read_private_key(str(tmp_path / "absent"))
    with pytest.raises(keys.KeyFileError, match="not a regular file"):
        keys.read_private_key(str(tmp_path))


def keygen(*args):
    return CliRunner().invoke(cli, ["keygen", *args])


def test_keygen_writes_a_0600_pair_and_prints_only_the_public_key(tmp_path):
    old = os.umask(0)  # even with a permissive umask the private key is 0600
    try:
        result = keygen("--private-key", str(tmp_path / "a.key"),
                        "--public-key", str(tmp_path / "a.pub"))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    private_text = (tmp_path / "a.key").read_text()
    assert stat.S_IMODE((tmp_path / "a.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a.pub").stat().st_mode) == 0o644
    public = wg_pubkey(private_text.strip())
    assert result.stdout == public + "\n"
    assert (tmp_path / "a.pub").read_text() == public + "\n"
    assert private_text.strip() not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.key", "a.pub"]  # no temp left


def test_keygen_refuses_to_overwrite_without_force(tmp_path):
    target = tmp_path / "a.key"
    assert keygen("--private-key", str(target)).exit_code == 0
    before = target.read_bytes()
    result = keygen("--private-key", str(target))
    assert result.exit_code == 1
    assert "exists" in result.stderr and "--force" in result.stderr
    assert result.stdout == ""
    assert target.read_bytes() == before
    # an existing public key file also stops it, before the private key is written
    result = keygen("--private-key", str(tmp_path / "b.key"), "--public-key", str(target))
    assert result.exit_code == 1 and not (tmp_path / "b.key").exists()


def test_keygen_force_replaces_atomically(tmp_path):
    target = tmp_path / "a.key"
    target.write_text("old\n")
    target.chmod(0o644)
    result = keygen("--private-key", str(target), "--force")
    assert result.exit_code == 0
    assert target.read_text() != "old\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert keys.encode(keys.public_key(keys.read_private_key(str(target)))) + "\n" == result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["a.key"]


def test_keygen_does_not_leave_half_a_pair(tmp_path):
    result = keygen("--private-key", str(tmp_path / "a.key"),
                    "--public-key", str(tmp_path / "missing-dir" / "a.pub"))
    assert result.exit_code == 1
    assert "No such file or directory" in result.stderr
    assert list(tmp_path.iterdir()) == []
