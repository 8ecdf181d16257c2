"""tests/netns: namespaces, veth, bridge, nftables, tc/bpf — only what the host kernel
has (no GRE, WireGuard, netem: those tests go to tests/integration). Topology fixtures
(topo, lab, lab_module, pair) come from tests/conftest.py."""

import pytest


@pytest.fixture(autouse=True)
def _no_leaks(no_leaked_namespaces):
    yield
