"""argoctl up/down with gre tunnels on the standard lab (see upcases.py)."""

import pytest

from upcases import *  # noqa: F401,F403  (the shared test cases)


@pytest.fixture(scope="module")
def kind():
    return "gre"


def _steered(env, pin, cfg, n=20) -> dict:
    """Send n UDP packets from the client through edge's steered LAN interface; the
    datapath's per-path packet counters say which path took them."""
    import socket
    from argoctl import maps
    ids = [cfg.path_id(p) for p in cfg.destinations[0].paths]
    with maps.Maps(pin) as m:
        before = {i: m.path_stats(i).packets for i in ids}
    with env["client"].inside():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(n):
            s.sendto(b"argoctl", ("203.0.113.10", 9))
        s.close()
    with maps.Maps(pin) as m:
        return {i: m.path_stats(i).packets - before[i] for i in ids}


def test_up_then_run_steer_relay1_direct_the_same_way(env):
    """paths = ["relay1", "direct"], no weights: `up` writes the first path set and
    the daemon starting on top of it keeps it (one rule, config.first_weights)."""
    import time
    from argoctl import apply, config, daemon as dmn, maps
    edge = env["edge"]
    text = (env["tmp"] / "edge.toml").read_text()
    assert 'paths = ["direct", "relay1"]' in text
    text = text.replace('paths = ["direct", "relay1"]', 'paths = ["relay1", "direct"]')
    text = text.replace("[[peer]]", 'steer_interfaces = ["to-client"]\n[[peer]]', 1)
    path = env["tmp"] / "edge-relay1-first.toml"
    path.write_text(text)
    cfg = config.load(str(path))
    dest = cfg.destinations[0].id
    ctx = apply.up(cfg, ns=edge.netns, run_dir=env["run_dir"], cgroup=None)
    pin = ctx.home.pin_dir
    try:
        with maps.Maps(pin) as m:
            before_set = m.pathset(dest)[1]
        before = _steered(env, pin, cfg)
        d = dmn.Daemon(cfg, dmn.Options(ns=edge.netns, run_dir=env["run_dir"], cgroup=None,
                                        metrics_listen="")).start_thread()
        try:
            end = time.monotonic() + 60
            while d.rounds < 3 and time.monotonic() < end:
                time.sleep(0.2)
            assert d.rounds >= 3
            with maps.Maps(pin) as m:
                after_set = m.pathset(dest)[1]
            after = _steered(env, pin, cfg)
            assert d.map_writes == 0, [r.to_dict() for r in d.history]
        finally:
            d.stop()
    finally:
        down(env, "edge")
    assert [(p.path_id, p.weight, p.up) for p in before_set] == [(1, 0, True), (0, 100, True)]
    assert after_set == before_set
    assert before == after == {1: 0, 0: 20}
