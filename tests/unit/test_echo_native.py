"""The compiled udp probe path (argoctl/_echo.c) against the Python definitions
of the same things: HMAC-SHA256 (hashlib), the wire format and the verdicts
(mac.py, probe.EchoTracker). Real UDP sockets on 127.0.0.1 only."""

from __future__ import annotations

import hmac
import os
import socket
import time

import pytest

from argoctl import mac
from argoctl.config import Policy
from argoctl.engine import Engine
from argoctl.estimator import State
from argoctl.probe import _SO_TIMESTAMPNS, _echo

KEY = mac.EchoKey(b"native-echo-test-key".ljust(32, b"n"))
REPLY, TIMEOUT, SEND_ERROR, CHANGED = 0, 1, 2, 3


def test_the_extension_is_built():
    # `make setup` builds it; without it every daemon falls back to the slow path
    assert _echo is not None


@pytest.mark.parametrize("key_len", [1, 32, 63, 64, 65, 200])
def test_hmac_matches_hashlib_for_every_block_boundary(key_len):
    key = os.urandom(key_len)
    msgs = [os.urandom(n) for n in list(range(0, 130)) + [1000, 4096]]
    assert _echo.hmac_sha256(key, msgs) == [hmac.digest(key, m, "sha256") for m in msgs]


@pytest.fixture
def pair():
    """A prober socket with the C channel on it, and a 'responder' socket."""
    prober = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    prober.setblocking(False)
    prober.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    prober.bind(("127.0.0.1", 0))
    resp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    resp.bind(("127.0.0.1", 0))
    resp.settimeout(2)
    ch = KEY.native_channel(prober.fileno(), socket.AF_INET, 300_000_000, 0.1, 1234)
    try:
        yield ch, prober, resp
    finally:
        prober.close()
        resp.close()


def _request(ch, resp, slot_port, interval_ns=10**9):
    slot = ch.add("127.0.0.1", slot_port, interval_ns, 0, -1)
    nxt = ch.send_due(time.monotonic_ns())
    data, src = resp.recvfrom(2048)
    return slot, nxt, data, src


def _drain(ch, prober, want: int = 1, timeout: float = 2.0):
    deadline = time.monotonic() + timeout
    out = []
    while time.monotonic() < deadline:
        ch.drain()
        out += ch.results()
        if len(out) >= want:
            break
        time.sleep(0.005)
    return out


def test_a_request_is_mac_py_wire_format_and_its_reply_is_matched(pair):
    ch, prober, resp = pair
    t0 = time.monotonic_ns()
    slot, nxt, data, src = _request(ch, resp, resp.getsockname()[1])
    req = KEY.parse(data)                       # Python's parser checks size, key id, MAC
    assert req.type == mac.REQUEST and req.rx == 0
    assert t0 <= req.sent <= time.monotonic_ns()
    assert src == prober.getsockname()
    assert ch.stream(slot)[:5] == (1, 1, 0, 0, 0) and ch.pending() == 1
    # the next probe is one interval +- 10% jitter later
    assert req.sent + 0.9e9 <= nxt <= req.sent + 1.1e9
    resp.sendto(KEY.reply(req, time.time_ns()), src)
    [(r_slot, seq, sent, at, code)] = _drain(ch, prober)
    assert (r_slot, seq, sent, code) == (slot, 1, req.sent, REPLY)
    assert req.sent < at <= time.monotonic_ns()
    # counted in C: one received, its RTT as sum, min and max
    rtt = (at - req.sent) / 1e9
    assert ch.stream(slot) == (1, 1, 1, 0, 0, rtt, rtt, rtt)
    assert ch.pending() == 0 and ch.rejects() == {}


def test_forged_replayed_malformed_and_late_replies_are_counted_not_delivered(pair):
    ch, prober, resp = pair
    slot, _, data, src = _request(ch, resp, resp.getsockname()[1])
    req = KEY.parse(data)
    good = KEY.reply(req, 1)
    other = mac.EchoKey(b"another-key".ljust(32, b"x"))
    resp.sendto(other.reply(req, 1), src)                        # wrong key
    resp.sendto(good[:-1] + bytes([good[-1] ^ 1]), src)          # bad MAC
    resp.sendto(KEY.request(req.seq, req.sent, req.nonce), src)  # a request reflected
    resp.sendto(good[:40], src)                                  # short
    tampered = mac.Echo(mac.REPLY, req.seq, req.sent + 1, req.nonce, 0)
    resp.sendto(KEY.reply(tampered, 1), src)                     # valid MAC, other sent time
    resp.sendto(good, src)                                       # the real one
    resp.sendto(good, src)                                       # ... replayed
    results = _drain(ch, prober, want=1)
    time.sleep(0.05)
    ch.drain()
    results += ch.results()
    assert [r[4] for r in results] == [REPLY]
    assert ch.rejects() == {"forged": 3, "malformed": 1, "replayed": 2}

    # a request nobody answers times out once its deadline (300 ms) passes ...
    slot2 = ch.add("127.0.0.1", resp.getsockname()[1], 10**9, 0, -1)
    ch.send_due(time.monotonic_ns())
    late = KEY.parse(resp.recvfrom(2048)[0])
    assert late.seq != req.seq
    deadline = ch.next_deadline()
    assert late.sent < deadline <= time.monotonic_ns() + 300_000_000
    ch.expire(deadline - 1)
    assert ch.results() == []
    ch.expire(deadline)
    assert [(r[0], r[4]) for r in ch.results()] == [(slot2, TIMEOUT)]
    assert ch.pending() == 0 and ch.next_deadline() == -1
    # ... and its reply arriving afterwards is late, not a result
    resp.sendto(KEY.reply(late, 1), src)
    time.sleep(0.05)
    ch.drain()
    assert ch.results() == [] and ch.rejects()["late"] == 1


def test_a_reply_from_another_address_is_not_accepted(pair):
    ch, prober, resp = pair
    _, _, data, src = _request(ch, resp, resp.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as elsewhere:
        elsewhere.bind(("127.0.0.1", 0))
        elsewhere.sendto(KEY.reply(KEY.parse(data), 1), src)
        time.sleep(0.05)
    ch.drain()
    assert ch.results() == [] and ch.rejects() == {"replayed": 1} and ch.pending() == 1


def test_limit_interval_and_removal(pair):
    ch, prober, resp = pair
    port = resp.getsockname()[1]
    a = ch.add("127.0.0.1", port, 20_000_000, 0, 3)     # 3 probes, 20 ms apart
    b = ch.add("127.0.0.1", port, 20_000_000, 0, -1)
    assert not ch.exhausted()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and ch.stream(b)[1] < 6:
        ch.send_due(time.monotonic_ns())
        time.sleep(0.005)
    assert ch.stream(a)[1] == 3 and ch.stream(b)[1] >= 6
    ch.remove(b)
    sent_b = ch.stream(b)[1]
    t = time.monotonic() + 0.1
    while time.monotonic() < t:
        assert ch.send_due(time.monotonic_ns()) == -1    # nothing left to schedule
        time.sleep(0.01)
    assert ch.stream(b)[1] == sent_b and ch.exhausted()
    ch.set_interval(a, 5_000_000)
    with pytest.raises(ValueError):
        ch.set_interval(a, 0)
    with pytest.raises(IndexError):
        ch.remove(99)
    with pytest.raises(ValueError):
        ch.add("2001:db8::1", port, 10**9, 0, -1)         # not this socket's family


def test_a_send_that_fails_is_reported_at_once(pair):
    ch, prober, resp = pair
    # port 0 is not a destination: the kernel refuses the datagram (EINVAL)
    slot = ch.add("127.0.0.1", 0, 10**9, 0, -1)
    ch.send_due(time.monotonic_ns())
    [(r_slot, seq, _, _, code)] = ch.results()
    assert (r_slot, seq, code) == (slot, 1, SEND_ERROR)
    assert ch.rejects() == {"send_errors": 1} and ch.pending() == 0


def test_a_reply_to_another_channel_is_replayed_not_late(pair):
    """Channels number requests in disjoint ranges: a genuine reply captured on
    one path and sent to another path's socket is a replay there."""
    ch, prober, resp = pair
    _, _, data, src = _request(ch, resp, resp.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s2:
        s2.setblocking(False)
        s2.bind(("127.0.0.1", 0))
        ch2 = KEY.native_channel(s2.fileno(), socket.AF_INET, 300_000_000, 0.1, 99)
        ch2.add("127.0.0.1", resp.getsockname()[1], 10**9, 0, -1)
        ch2.send_due(time.monotonic_ns())
        own = KEY.parse(resp.recvfrom(2048)[0])
        ch2.expire(ch2.next_deadline())            # its own request times out ("late" later)
        assert [r[4] for r in ch2.results()] == [TIMEOUT]
        req = KEY.parse(data)
        assert req.seq != own.seq and req.seq & 0xFFFF_FFFF == own.seq & 0xFFFF_FFFF
        resp.sendto(KEY.reply(req, 1), s2.getsockname())
        resp.sendto(KEY.reply(own, 1), s2.getsockname())
        time.sleep(0.05)
        ch2.drain()
        assert ch2.results() == [] and ch2.rejects() == {"replayed": 1, "late": 1}


def test_bad_construction_is_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(ValueError, match="jitter"):
            KEY.native_channel(s.fileno(), socket.AF_INET, 10**9, 1.0, 1)
        with pytest.raises(ValueError, match="family"):
            KEY.native_channel(s.fileno(), socket.AF_UNIX, 10**9, 0.1, 1)
        ch = KEY.native_channel(s.fileno(), socket.AF_INET, 10**9, 0.1, 1)
        with pytest.raises(RuntimeError, match="already"):
            ch.__init__(s.fileno(), socket.AF_INET, b"k" * 32, 1, 10**9, 0.1, 1)


def test_the_compiled_path_is_used_only_with_its_clock():
    from argoctl.probe import ProbeScheduler
    assert ProbeScheduler(lambda *a: None, key=KEY).native
    # an injected clock (replayed traces, tests) keeps the Python channel
    assert not ProbeScheduler(lambda *a: None, key=KEY, clock=lambda: 0).native
    with pytest.raises(ValueError, match="monotonic_ns"):
        ProbeScheduler(lambda *a: None, key=KEY, clock=lambda: 0, native=True)


def test_random_and_crafted_datagrams_are_all_rejected_and_counted(pair):
    """C parsing network input: sizes 0..200, right header with random bytes,
    validly MACed replies for sequence numbers never sent (any channel tag)."""
    import random
    ch, prober, resp = pair
    _request(ch, resp, resp.getsockname()[1])      # one request in flight
    rng = random.Random(7)
    dst = prober.getsockname()
    head = b"AP\x01\x02" + KEY.key_id.to_bytes(4, "big")
    sent = 0
    for i in range(600):
        kind = i % 3
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 200))
        elif kind == 1:
            data = head + rng.randbytes(56)
        else:
            echo = mac.Echo(mac.REPLY, rng.getrandbits(64), rng.getrandbits(64),
                            rng.randbytes(16), 0)
            data = KEY.reply(echo, rng.getrandbits(63))
        resp.sendto(data, dst)
        sent += 1
        if i % 100 == 99:
            time.sleep(0.01)
            ch.drain()
    time.sleep(0.05)
    ch.drain()
    assert ch.results() == []
    rej = ch.rejects()
    assert sum(rej.values()) == sent, rej
    assert set(rej) <= {"malformed", "forged", "replayed"} and rej["replayed"] == 200, rej
    assert ch.pending() == 1


def test_sending_ahead_of_time_keeps_the_stream_rate(pair):
    """A busy scheduler sends up to 20 ms ahead: the next probe is timed from
    when this one was due, so early sends do not speed the stream up."""
    ch, prober, resp = pair
    slot = ch.add("127.0.0.1", resp.getsockname()[1], 50_000_000, time.monotonic_ns(), -1)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        ch.send_due(time.monotonic_ns() + 20_000_000)     # 20 ms ahead, every 5 ms
        time.sleep(0.005)
    # 1 s / 50 ms = 20 (+1 for the one due at the start, +1 sent ahead at the end);
    # timed from the send instead it would be ~1 s / 30 ms = 33
    assert 19 <= ch.stream(slot)[1] <= 23, ch.stream(slot)


def test_a_bound_stream_feeds_its_path_state_and_reports_only_state_changes(pair):
    """bind(): the channel feeds a compiled engine path state (_pathcore) itself;
    Python sees a result only when it changed the path's state (code 3)."""
    pol = Policy(probe_interval_ms=1000, probe_timeout_ms=300, detect_multiplier=3,
                 recover_probes=3, loss_window=10)
    ch, prober, resp = pair
    eng_c = Engine(pol, [("d", ("direct",))], native=True)
    eng_py = Engine(pol, [("d", ("direct",))], native=False)
    core = eng_c.native_sink("d", "direct")
    slot = ch.add("127.0.0.1", resp.getsockname()[1], int(0.05e9), time.monotonic_ns(), 6)
    ch.bind(slot, core)
    results, replied = [], 0
    resp.settimeout(0.02)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and ch.stream(slot)[2] + ch.stream(slot)[3] < 6:
        ch.send_due(time.monotonic_ns())
        try:
            data, src = resp.recvfrom(2048)
        except socket.timeout:
            data = None
        if data is not None and replied < 4:          # answer the first four, drop the rest
            resp.sendto(KEY.reply(KEY.parse(data), time.time_ns()), src)
            replied += 1
        ch.drain()
        ch.expire(time.monotonic_ns())
        results += ch.results()
    seq, sent, received, lost, errors, rtt_sum, rtt_min, rtt_max = ch.stream(slot)
    assert (seq, sent, received, lost, errors) == (6, 6, 4, 2, 0)
    assert rtt_min <= rtt_sum / 4 <= rtt_max < 0.3
    # Python heard only the state changes: unknown -> up (first reply), up ->
    # suspect (first timeout); the second timeout changes nothing (multiplier 3)
    assert [(r[0], r[1], r[4]) for r in results] == [(slot, 1, CHANGED), (slot, 5, CHANGED)]
    est = eng_c.path("d", "direct")
    assert est.state is State.SUSPECT and est.counts["replies"] == 4
    assert est.counts["timeouts"] == 2 and est.consecutive_miss == 2
    assert est.srtt is not None and est.loss == pytest.approx(2 / 6)
    ch.bind(slot, None)                       # unbound: results come to Python again
    with pytest.raises(TypeError, match="PathState"):
        ch.bind(slot, eng_py.path("d", "direct"))
    ch.remove(slot)
    with pytest.raises(ValueError, match="removed"):
        ch.bind(slot, core)
