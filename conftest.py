"""What every test needs: the models exist before any pattern starts."""

from mlpatterns.training import iris

pytest_plugins = ["mlpatterns.testing"]  # the test kit: the `pattern` fixture, start_pattern, assert_refused


def pytest_configure(config):
    """Build every iris model once (a no-op when `make models` already did), before any test process starts:
    under pytest-xdist in the controller alone, so no two workers write one model at once."""
    if not hasattr(config, "workerinput"):  # xdist's workers have it; the controller and a plain run do not
        iris.main(["all"])
