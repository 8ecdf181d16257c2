"""tests/integration: namespaces with real GRE, WireGuard and netem. `make test` runs
this suite natively when the kernel has them, else in one virtme-ng VM of the
distribution kernel (argoctl.vm). Topology fixtures come from tests/conftest.py.

By hand:  .venv/bin/python -m argoctl.vm -- .venv/bin/python -m pytest tests/integration
"""

import pytest

from argoctl import vm


@pytest.fixture(scope="session", autouse=True)
def kernel_features():
    missing = vm.missing_features()
    if missing:
        pytest.fail(
            f"this kernel lacks {', '.join(missing)}: run `make test-integration`, or "
            "`.venv/bin/python -m argoctl.vm -- .venv/bin/python -m pytest tests/integration`",
            pytrace=False)


@pytest.fixture(autouse=True)
def _no_leaks(no_leaked_namespaces):
    yield
