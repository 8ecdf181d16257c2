"""Registers argoctl's test plugin (tests/argoctl_fixtures.py: namespace
topologies that are always removed, suite rules); helpers that only tests use are
in tests/kit.py."""

import pytest

# Shared test-case modules imported by several test files: rewrite their asserts
# too, so a failing snapshot comparison prints the difference, not a bare
# AssertionError.
pytest.register_assert_rewrite("argoctl_fixtures", "kit", "upcases", "upkit")

pytest_plugins = ["argoctl_fixtures"]
