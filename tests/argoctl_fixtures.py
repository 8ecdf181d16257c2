"""argoctl's pytest plugin (registered by tests/conftest.py), fixtures for every suite:
network-namespace topologies that are always removed.

    topo        an empty Topology with a prefix unique to the test; add hosts and
                links, then start(). Removed after the test, pass or fail.
    lab         the standard lab (Topology.default(), see argoctl/lab/topo.py), started.
    lab_module  the same, shared by a module (cheaper in the VM): clear what you impair.
    pair        hosts "a" (lo 192.0.2.1, 2001:db8::1) and "b" (lo 192.0.2.2, 2001:db8::2)
                over one link (192.0.2.64/30: a .65, b .66; 2001:db8:ff::/64: ::1, ::2),
                each routing the other's loopback over it; started.
    nats_fleet  a nats-server on 127.0.0.1 (argoctl/lab/nats.py: JetStream, users
                edge, relay1, relay2 and admin, the fleet buckets), always stopped.

tests/integration fails every test with a clear message on a kernel without GRE,
WireGuard or netem (`make test` runs it where they exist). In tests/netns and
tests/integration a test whose namespaces outlive it fails.

Namespaces are named agt<pytest pid>n<counter>-<host>, so a crashed run's leftovers
are recognisable: the first topology fixture of a session removes those whose pytest
process is gone, and never touches a concurrent run's.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest

from argoctl.lab import topo as topology
from argoctl.daemon import pid_alive


TESTS = Path(__file__).resolve().parent
_PREFIX = re.compile(r"^agt(\d+)n\d+$")
_counter = itertools.count()
_shared: set[str] = set()      # prefixes of module-scoped topologies (not leaks)


def new_prefix() -> str:
    """A namespace prefix no other test (of this or a concurrent run) uses."""
    return f"agt{os.getpid()}n{next(_counter)}"


def shared_prefix() -> str:
    """A new prefix for a topology a whole module shares (not a leak between its tests)."""
    prefix = new_prefix()
    _shared.add(prefix)
    return prefix


def own_namespaces() -> list[str]:
    """Namespaces of this pytest process that still exist."""
    mine = f"agt{os.getpid()}n"
    return [n for n in topology.list_namespaces() if n.startswith(mine)]


@pytest.fixture(scope="session")
def stale_namespaces_removed() -> None:
    prefixes = {n.split("-", 1)[0] for n in topology.list_namespaces()}
    for prefix in prefixes:
        m = _PREFIX.match(prefix)
        if m and not pid_alive(int(m.group(1))):
            topology.cleanup_stale(prefix)


@pytest.fixture
def topo(stale_namespaces_removed):
    with topology.Topology(new_prefix()) as t:
        yield t


@pytest.fixture
def lab(stale_namespaces_removed):
    with topology.Topology.default(new_prefix()) as t:
        t.start()
        yield t


@pytest.fixture(scope="module")
def lab_module(stale_namespaces_removed):
    with topology.Topology.default(shared_prefix()) as t:
        t.start()
        yield t


@pytest.fixture
def pair(stale_namespaces_removed):
    with topology.Topology(new_prefix()) as t:
        a = t.add_host("a", loopback="192.0.2.1", loopback6="2001:db8::1")
        b = t.add_host("b", loopback="192.0.2.2", loopback6="2001:db8::2")
        t.add_link(a, b, subnet="192.0.2.64/30", subnet6="2001:db8:ff::/64")
        for x, y in ((a, b), (b, a)):
            t.add_route(x, f"{y.loopback}/32", via=y)
            t.add_route(x, f"{y.loopback6}/128", via=y)
        t.start()
        yield t


@pytest.fixture(scope="session")
def integration_kernel() -> None:
    """tests/integration needs GRE, WireGuard and netem: a clear error where missing."""
    from argoctl.lab import vm
    missing = vm.missing_features()
    if missing:
        pytest.fail(
            f"this kernel lacks {', '.join(missing)}: run `make test-integration`, or "
            "`.venv/bin/python -m argoctl.lab.vm -- .venv/bin/python -m pytest tests/integration`",
            pytrace=False)


def _suite(request) -> str:
    try:
        return Path(request.node.path).resolve().relative_to(TESTS).parts[0]
    except ValueError:
        return ""


@pytest.fixture(autouse=True)
def _suite_rules(request):
    """tests/netns and tests/integration: fail a test whose topologies outlive it;
    tests/integration: check the kernel first. (Here rather than in per-suite
    conftest.py files: tests/bpf imports its own conftest by name, which a later
    loaded conftest.py would shadow.)"""
    suite = _suite(request)
    if suite == "integration":
        request.getfixturevalue("integration_kernel")
    yield
    if suite not in ("netns", "integration"):
        return
    leaked = [n for n in own_namespaces() if n.split("-", 1)[0] not in _shared]
    if leaked:
        for prefix in {n.split("-", 1)[0] for n in leaked}:
            topology.cleanup_stale(prefix)
        pytest.fail(f"namespaces left behind by the test: {leaked}", pytrace=False)


@pytest.fixture
def nats_fleet():
    from argoctl.lab.nats import NatsFleet
    with NatsFleet(["edge", "relay1", "relay2"], size=1) as nf:
        yield nf
