"""Passive TCP signals: SYNs steered onto a path, SYN-ACKs seen coming back on
tunnel/underlay ingress, handshake RTT from unambiguous (not retransmitted) SYNs."""

import time

from packets import tcp4, tcp6
from conftest import mark, paths

ORIGIN4, ORIGIN6 = "198.51.100.10", "2001:db8:5::10"


def synack(build, origin, client, sport):
    return build(client, src=origin, sport=443, dport=sport, flags="SA")


def setup(dp):
    dp.maps.set_prefixes([("198.51.100.0/24", 1), ("2001:db8:5::/48", 1)])
    dp.maps.set_pathsets({1: paths(1)})


def test_synack_counts_for_the_syns_path_with_rtt(dp):
    setup(dp)
    assert dp.mark_of(tcp4(ORIGIN4, sport=41000)) == mark(1)
    time.sleep(0.01)
    assert dp.run(synack(tcp4, ORIGIN4, "192.0.2.10", 41000), prog="passive_eth") == (0, 0)
    st = dp.maps.path_stats(1)
    assert (st.syns, st.synacks, st.rtt_count) == (1, 1, 1)
    assert 10e6 <= st.rtt_sum_ns < 5e9
    # A duplicate SYN-ACK is not a second answer.
    dp.run(synack(tcp4, ORIGIN4, "192.0.2.10", 41000), prog="passive_eth")
    assert dp.maps.path_stats(1).synacks == 1


def test_retransmitted_syn_gives_no_rtt_sample(dp):
    setup(dp)
    for _ in range(2):
        dp.mark_of(tcp6(ORIGIN6, sport=42000))
    dp.run(synack(tcp6, ORIGIN6, "2001:db8:c::10", 42000), prog="passive_eth")
    st = dp.maps.path_stats(1)
    assert (st.syns, st.synacks, st.rtt_count) == (2, 1, 0)


def test_unanswered_syns_and_foreign_synacks(dp):
    setup(dp)
    for port in range(43000, 43010):
        dp.mark_of(tcp4(ORIGIN4, sport=port))
    # A SYN-ACK for a flow we never steered changes nothing.
    dp.run(synack(tcp4, ORIGIN4, "192.0.2.99", 43000), prog="passive_eth")
    st = dp.maps.path_stats(1)
    assert (st.syns, st.synacks) == (10, 0)
