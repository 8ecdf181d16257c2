"""argoctl up/down with gre tunnels on the standard lab (see upcases.py)."""

import pytest

from upcases import *  # noqa: F401,F403  (the shared test cases)


@pytest.fixture(scope="module")
def kind():
    return "gre"
