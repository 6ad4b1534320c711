"""The test kit, a pytest plugin (registered for the whole repository by the root conftest.py).

A pattern's end-to-end test names its directory in `PATTERN` and takes the `pattern` fixture: the pattern is
started once per test module through the local runner, on free ports, and stopped after the module's last
test, also when a test or the start fails (a start failure shows the services' last log lines; a failing
test gets the logs of every service still running in its report):

    from mlpatterns.testing import assert_healthy, assert_refused, start_pattern

    PATTERN = Path(__file__).parents[1]

    def test_predicts(pattern):
        web = pattern.client("web")  # an httpx.Client on the service's base URL, closed at teardown
        assert web.post("/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200

    def test_loader_setting(tmp_path):  # a start of its own, with one service's environment overridden
        with start_pattern(PATTERN, overrides={"loader": {"MODEL_SOURCE": "..."}}) as run:
            assert run.client("api").get("/health").status_code == 200

    def test_refuses_a_bad_row(pattern):
        web = pattern.client("web")
        assert_refused(web.post("/predict", json={"data": [[1, 2]]}), 422, "each row must have shape 4")
        assert_healthy(web)

`pattern.url(name)`, `.port(name)`, `.logs(name)` are the runner's; `.run` is the runner's PatternRun. Tests start
their own Redis and PostgreSQL: a REDIS_URL or DATABASE_URL in the caller's environment is not used.
Generic bad input (malformed JSON, wrong types, NaN, ragged batches, oversized bodies...) needs no test in a
pattern: tests/test_bad_input.py finds every pattern by its docker-compose.yml and sends its table to every HTTP
service. A pattern's tests assert its own messages, with `assert_refused`.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from mlpatterns.demo import metric_sum
from mlpatterns.runner import PatternRun, run_pattern
from mlpatterns.runner.backing import RedisServer, free_port

LOG_LINES = 40  # of each service, in the report of a failed test
MAX_ERROR_BYTES = 4096  # a longer error answer is no clear message (one error per bad value of a batch)

_running: list["StartedPattern"] = []  # started and not yet stopped: their logs go into failure reports


class StartedPattern:
    """A pattern started by the runner, with an httpx client per service made on first use."""

    def __init__(self, run: PatternRun, timeout: float):
        self.run = run
        self.timeout = timeout
        self._clients: dict[str, httpx.Client] = {}

    def url(self, name: str) -> str:
        return self.run.url(name)

    def port(self, name: str) -> int:
        return self.run.port(name)

    def logs(self, name: str) -> str:
        return self.run.logs(name)

    def client(self, name: str) -> httpx.Client:
        if name not in self._clients:
            self._clients[name] = httpx.Client(base_url=self.url(name), timeout=self.timeout)
        return self._clients[name]

    def http_services(self) -> list[str]:
        """The services that run as processes and listen on a port, in start order."""
        return [
            name
            for name, running in self.run.running.items()
            if running.service.kind == "process" and running.port is not None
        ]

    def health_path(self, name: str) -> str:
        """The path the service's compose healthcheck polls (model_db's is /v0.1/health), else /health."""
        check = self.run.running[name].service.healthcheck
        for arg in check:
            if arg.startswith(("http://", "https://")):
                return "/" + arg.split("/", 3)[3]
        paths = [arg for arg in check[1:] if arg.startswith("/")]  # `python -m mlpatterns.healthcheck /v0.1/health`
        return paths[-1] if paths else "/health"

    def tail(self) -> str:
        return "\n".join(
            f"--- {name}\n" + "\n".join(self.logs(name).splitlines()[-LOG_LINES:]) for name in self.run.running
        )

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


@contextmanager
def start_pattern(
    pattern_dir: str | Path,
    overrides: dict[str, dict[str, str]] | None = None,
    timeout: float = 30.0,
) -> Iterator[StartedPattern]:
    """Start every service of the pattern on free ports; `overrides` sets single services' environment
    variables over their compose values; `timeout` is the clients'. Stops everything on the way out."""
    with run_pattern(pattern_dir, free_ports=True, environ={}, overrides=overrides) as run:
        started = StartedPattern(run, timeout)
        _running.append(started)
        try:
            yield started
        except Exception as error:
            error.add_note(f"last log lines of {Path(pattern_dir).name}:\n{started.tail()}")
            raise
        finally:
            _running.remove(started)
            started.close()


@pytest.fixture(scope="module")
def pattern(request) -> Iterator[StartedPattern]:
    """The test module's `PATTERN` (its directory), started once for the module."""
    if not hasattr(request.module, "PATTERN"):
        pytest.fail(f"{request.module.__name__} uses the `pattern` fixture: set PATTERN to the pattern's directory")
    with start_pattern(request.module.PATTERN) as started:
        yield started


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A private redis-server on a free port for the module's tests (core pieces that use Redis directly)."""
    server = RedisServer(free_port()).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and call.when == "call":
        for started in _running:
            report.sections.append((f"logs of {started.run.pattern_dir.name}", started.tail()))
    return report


def assert_refused(response: httpx.Response, status: int | None = None, message: str | None = None) -> None:
    """Bad input, well answered: a 4xx (`status` if given), never a 5xx, with a short JSON body whose `detail`
    (`error` on the open inference protocol's routes) is not empty (and contains `message` if given)."""
    request = f"{response.request.method} {response.request.url.path}"
    assert 400 <= response.status_code < 500, f"{request}: {response.status_code} {response.text[:500]}"
    assert status is None or response.status_code == status, f"{request}: {response.status_code} {response.text}"
    assert len(response.content) <= MAX_ERROR_BYTES, f"{request}: a {len(response.content)}-byte error"
    try:
        answer = response.json()
        detail = answer.get("detail") or answer.get("error")
    except (ValueError, AttributeError):  # not JSON, or not an object
        detail = None
    assert detail, f"{request}: no JSON detail in {response.text[:500]!r}"
    assert message is None or message in json.dumps(detail, ensure_ascii=False), f"{request}: {detail}"


def assert_healthy(client: httpx.Client, path: str = "/health") -> None:
    response = client.get(path)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:500]}"


def metric(client: httpx.Client, prefix: str) -> float:
    """The sum of the samples on a service's /metrics whose line starts with `prefix`, e.g.
    `cache_lookups_total{cache="prediction",result="hit"}` (0 when there is none yet)."""
    return metric_sum(client.get("/metrics").text, prefix)


def read_metrics(started: StartedPattern, wanted: dict[str, tuple[str, str]]) -> dict[str, float]:
    """`{name: metric(service's client, prefix)}` for each `name: (service, prefix)` of `wanted`: several
    counters of several services read together, to compare before and after a request."""
    return {name: metric(started.client(service), prefix) for name, (service, prefix) in wanted.items()}
