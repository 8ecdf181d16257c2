"""The lab bench's probe counting (argoctl/bench/fleetlab.py) on real packets in
two namespaces: what a host sends to the responder's port and its ICMP echo
requests are counted at its output, what arrives at the origin's port at its
input, and nothing else; the rates and the regret pricing from those counts.
(The whole bench, `argoctl bench fleet`, runs the 12-host lab: `make bench`.)"""

from __future__ import annotations

import socket

from argoctl.bench import fleetlab

PORT = 7447


def _send_udp(host, dst: str, port: int, n: int) -> None:
    with host.inside():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        for _ in range(n):
            s.sendto(b"x" * 32, (dst, port))


def test_counters_count_probe_packets_sent_and_arriving(pair):
    a, b = pair["a"], pair["b"]
    counters = fleetlab.ProbeCounters({"a": a}, b, port=PORT)
    before = counters.read()
    assert before == ({"a": {"e2e": 0, "legs": 0}}, 0)
    _send_udp(a, b.loopback, PORT, 5)          # probes
    _send_udp(a, b.loopback, PORT + 1, 4)      # other traffic: not a probe
    _send_udp(b, a.loopback, PORT, 2)          # b's sends: b is the origin here, not counted
    assert a.run(["ping", "-c", "3", "-i", "0.2", "-W", "1", b.loopback]).returncode == 0
    after = counters.read()
    assert after == ({"a": {"e2e": 5, "legs": 3}}, 5)
    r = fleetlab.rates(before, after, 2.0, edges=["a"])
    assert r["per_origin"] == 2.5 and r["per_host"] == 4.0 and r["per_edge"] == 4.0
    assert r["tunnel_legs_per_host"] == 1.5 and r["sent_to_origin"] == 2.5
    assert r["per_relay"] is None
    # the origin's host serving 5 destinations: per origin is per destination
    assert fleetlab.rates(before, after, 2.0, edges=["a"], origins=5)["per_origin"] == 0.5


def test_regret_prices_both_modes_choices_on_one_table():
    rtts = {"e1": {"direct": 1.0, "r1": 2.0}, "e2": {"direct": 1.0, "r1": 3.0},
            "e3": {"direct": 4.0, "r1": 1.0}}
    off = {"choices": {"e1": "direct", "e2": "direct", "e3": "r1"}}
    on = {"choices": {"e1": "r1", "e2": "r1", "e3": "r1"}}
    r = fleetlab.regret(rtts, off, on)
    assert (r["median_rtt_ms_off"], r["median_rtt_ms_on"]) == (1.0, 2.0)
    assert r["regret_pct"] == 100.0
    assert fleetlab.regret(rtts, off, off)["regret_pct"] == 0.0


def test_ping_rtt_is_the_median_of_the_replies_and_none_without_one(pair):
    a, b = pair["a"], pair["b"]
    r = a.run(["ping", "-n", "-c", "5", "-i", "0.01", "-W", "1", b.loopback])
    rtt = fleetlab.parse_ping(r.stdout)
    assert rtt is not None and 0 < rtt < 50, r.stdout
    assert fleetlab.parse_ping(a.run(["ping", "-n", "-c", "2", "-W", "1", "192.0.2.99"]).stdout) \
        is None
