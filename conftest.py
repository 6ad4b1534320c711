"""Fixtures shared by every test: the models exist before any pattern starts."""

import pytest

from mlpatterns.training import iris

pytest_plugins = ["mlpatterns.testing"]  # the test kit: the `pattern` fixture, start_pattern, assert_refused


@pytest.fixture(scope="session", autouse=True)
def models():
    """Build every iris model once (a no-op when `make models` already did)."""
    iris.main(["all"])
