"""UDP echo wire format, MAC, reply matching (replay window) and responder logic: pure."""

import ipaddress
import os

import pytest

from argoctl import mac
from argoctl.config import Probe
from argoctl.keys import KeyFileError
from argoctl.probe import EchoTracker, PathProber
from argoctl.responder import Responder, TokenBucket, parse_listen

KEY = mac.EchoKey(b"k" * 32)
OTHER = mac.EchoKey(b"o" * 32)
RESPONDER = ("203.0.113.1", 7447)
SEC = 10**9


def prober():
    return PathProber("web", "direct", 0xFF0000,
                      Probe("udp", ipaddress.ip_address(RESPONDER[0]), RESPONDER[1]))


def exchange(tracker, p, seq=1, sent=1000, key=KEY):
    """Send one request through the tracker, answer it as the responder would."""
    wire_seq = next(tracker.seqs)
    req = tracker.request(wire_seq, p, seq, sent, sent + SEC, RESPONDER)
    return req, key.reply(key.parse(req), 42)


def test_request_and_reply_are_64_bytes_and_verify():
    t = EchoTracker(KEY)
    req, rep = exchange(t, prober())
    assert len(req) == len(rep) == mac.SIZE
    echo = KEY.parse(rep)
    assert (echo.type, echo.seq, echo.sent, echo.rx) == (mac.REPLY, 1, 1000, 42)
    assert KEY.parse(req).nonce == echo.nonce


def test_genuine_reply_accepted_once_then_counted_as_replay():
    t = EchoTracker(KEY)
    p = prober()
    _, rep = exchange(t, p, seq=7, sent=1000)
    entry = t.match(rep, RESPONDER, 2000)
    assert entry[0] is p and entry[1] == 7 and entry[2] == 1000
    assert t.match(rep, RESPONDER, 2001) is None
    assert t.match(rep, RESPONDER, 2002) is None
    assert t.rejects == {"replayed": 2}


@pytest.mark.parametrize("offset", range(mac.SIZE))
def test_tampering_any_byte_is_rejected(offset):
    t = EchoTracker(KEY)
    _, rep = exchange(t, prober())
    bad = bytearray(rep)
    bad[offset] ^= 0x01
    assert t.match(bytes(bad), RESPONDER, 2000) is None
    assert sum(t.rejects.values()) == 1
    assert set(t.rejects) <= {"forged", "malformed"}
    # the genuine reply still counts: tampering did not consume the request
    assert t.match(rep, RESPONDER, 2000) is not None


def test_reply_made_with_another_key_is_forged():
    t = EchoTracker(KEY)
    req, _ = exchange(t, prober())
    echo = KEY.parse(req)
    forged = OTHER.reply(echo, 42)
    assert t.match(forged, RESPONDER, 2000) is None
    # same key id but a MAC made without the key
    guessed = forged[:4] + req[4:8] + forged[8:]
    assert t.match(guessed, RESPONDER, 2000) is None
    assert t.rejects == {"forged": 2}


def test_request_reflected_back_is_not_a_reply():
    t = EchoTracker(KEY)
    req, rep = exchange(t, prober())
    assert t.match(req, RESPONDER, 2000) is None
    assert t.rejects == {"forged": 1}
    assert t.match(rep, RESPONDER, 2000) is not None


def test_reply_for_another_request_or_an_earlier_run_is_rejected():
    earlier = EchoTracker(KEY)
    _, old_reply = exchange(earlier, prober())      # captured from a previous run, seq 1
    t = EchoTracker(KEY)
    _, rep = exchange(t, prober())                  # seq 1 again, other nonce
    assert t.match(old_reply, RESPONDER, 2000) is None
    assert t.rejects == {"replayed": 1}
    assert t.match(rep, RESPONDER, 2000) is not None


def test_reply_from_an_unexpected_address_is_rejected():
    t = EchoTracker(KEY)
    _, rep = exchange(t, prober())
    assert t.match(rep, ("198.51.100.9", 7447), 2000) is None
    assert t.match(rep, (RESPONDER[0], 7448), 2000) is None
    assert t.match(rep, RESPONDER, 2000) is not None


def test_late_reply_counted_and_ignored():
    t = EchoTracker(KEY)
    p = prober()
    _, rep1 = exchange(t, p, seq=1, sent=0)
    _, rep2 = exchange(t, p, seq=2, sent=0)
    expired = t.expire(SEC)                     # deadline reached: both time out
    assert [e[1] for e in expired] == [1, 2]
    assert t.match(rep1, RESPONDER, SEC + 1) is None
    _, rep3 = exchange(t, p, seq=3, sent=SEC)
    assert t.match(rep3, RESPONDER, 3 * SEC) is None   # after its deadline, before a sweep
    assert t.rejects == {"late": 2}
    assert not t.pending


@pytest.mark.parametrize("data", [b"", b"AP", b"\0" * 63, b"\0" * 64, b"\xff" * 65,
                                  os.urandom(64), b"AP\x02\x02" + b"\0" * 60])
def test_malformed_counted_not_crashed(data):
    t = EchoTracker(KEY)
    exchange(t, prober())
    assert t.match(data, RESPONDER, 2000) is None
    assert sum(t.rejects.values()) == 1


def test_responder_drops_bad_requests_and_never_amplifies():
    r = Responder(KEY, [], clock=lambda: 0.0, rate=1000, global_rate=1000)
    req = KEY.request(5, 99, b"n" * 16)
    reply = r.answer(req, "192.0.2.1", 0.0)
    assert len(reply) <= len(req)
    assert KEY.parse(reply).seq == 5
    assert r.answer(OTHER.request(5, 99, b"n" * 16), "192.0.2.1", 0.0) is None
    assert r.answer(req[:-1] + bytes([req[-1] ^ 1]), "192.0.2.1", 0.0) is None
    assert r.answer(req + b"x", "192.0.2.1", 0.0) is None
    assert r.answer(reply, "192.0.2.1", 0.0) is None        # a reply is not a request
    assert r.counters == {"wrong_key": 1, "bad_mac": 1, "malformed": 2}


def test_responder_rate_limits_per_source_and_globally():
    r = Responder(KEY, [], clock=lambda: 0.0, rate=10, burst=10, global_rate=15, global_burst=15)
    req = KEY.request(1, 1, b"n" * 16)
    a = sum(r.answer(req, "192.0.2.1", 0.0) is not None for _ in range(100))
    assert a == 10
    b = sum(r.answer(req, "192.0.2.2", 0.0) is not None for _ in range(100))
    assert b == 5                                          # global bucket left 5
    assert r.counters["rate_limited_source"] == 180
    assert r.counters["rate_limited_global"] == 5
    # one second later each source gets its rate again, within the global rate
    a = sum(r.answer(req, "192.0.2.1", 1.0) is not None for _ in range(100))
    assert a == 10


def test_forged_requests_do_not_spend_a_source_tokens():
    r = Responder(KEY, [], clock=lambda: 0.0, rate=5, burst=5)
    bad = OTHER.request(1, 1, b"n" * 16)
    for _ in range(100):
        r.answer(bad, "192.0.2.1", 0.0)
    good = KEY.request(1, 1, b"n" * 16)
    assert sum(r.answer(good, "192.0.2.1", 0.0) is not None for _ in range(10)) == 5


def test_token_bucket_refills_at_rate():
    b = TokenBucket(rate=100, burst=1, now=0.0)
    assert b.take(0.0) and not b.take(0.0)
    assert sum(b.take(i / 1000) for i in range(1, 1001)) == 100


def test_key_file_must_be_0600_and_long_enough(tmp_path):
    path = tmp_path / "probe.key"
    mac.write_key(str(path))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    key = mac.read_key(str(path))
    assert "probe.key" not in repr(key) and len(str(key)) < 40
    with pytest.raises(FileExistsError):
        mac.write_key(str(path))
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by group or others"):
        mac.read_key(str(path))
    short = tmp_path / "short.key"
    short.write_text("c2hvcnQ=\n")
    short.chmod(0o600)
    with pytest.raises(KeyFileError, match="at least 32"):
        mac.read_key(str(short))
    with pytest.raises(KeyFileError, match="does not exist"):
        mac.read_key(str(tmp_path / "missing"))


def test_parse_listen():
    assert parse_listen("0.0.0.0:7447") == ("0.0.0.0", 7447)
    assert parse_listen("[::]:9") == ("::", 9)
    assert parse_listen("2001:db8::1") == ("2001:db8::1", 7447)
    for bad in ("nope:1", "0.0.0.0:0", "[::1", "0.0.0.0:x"):
        with pytest.raises(ValueError, match="listen address"):
            parse_listen(bad)


def test_interval_has_jitter_and_is_faster_while_in_doubt():
    from argoctl.probe import ProbeScheduler

    doubt = {("web", "r1")}
    sched = ProbeScheduler(lambda *a: None, key=KEY, interval_ms=1000, jitter=0.1,
                           fast_divisor=4, in_doubt=lambda d, p: (d, p) in doubt,
                           intervals={"api": 200})
    sched.add("web", "direct", 0xFF0000, Probe("udp", ipaddress.ip_address(RESPONDER[0]), 7447))
    sched.add("web", "r1", 0x10000, Probe("udp", ipaddress.ip_address(RESPONDER[0]), 7447))
    sched.add("api", "direct", 0xFF0000, Probe("icmp", ipaddress.ip_address(RESPONDER[0])))
    normal = [sched._interval(sched.probers[("web", "direct")]) for _ in range(500)]
    fast = [sched._interval(sched.probers[("web", "r1")]) for _ in range(500)]
    api = [sched._interval(sched.probers[("api", "direct")]) for _ in range(500)]
    assert 0.9 <= min(normal) < 0.95 and 1.05 < max(normal) <= 1.1
    assert 0.225 <= min(fast) and max(fast) <= 0.275
    assert 0.18 <= min(api) and max(api) <= 0.22
    doubt.clear()
    assert sched._interval(sched.probers[("web", "r1")]) >= 0.9


def test_scheduler_refuses_udp_without_key_and_tcp_without_port():
    from argoctl.probe import ProbeScheduler

    sched = ProbeScheduler(lambda *a: None)
    with pytest.raises(ValueError, match="responder key"):
        sched.add("web", "direct", 0xFF0000, Probe("udp", ipaddress.ip_address("192.0.2.1"), 7447))
    with pytest.raises(ValueError, match="need a port"):
        sched.add("web", "direct", 0xFF0000, Probe("tcp", ipaddress.ip_address("192.0.2.1")))
    assert not sched.probers
