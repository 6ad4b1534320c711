"""End to end: the proxy and its three one-vs-rest backends started by the local runner, as `make up` starts them.

What the pattern promises: one request reaches every backend at once (so it takes about as long as the slowest
backend, not the sum), the answers are combined (each backend's, and the best label per row), and a backend that
is dead or slow costs its own part of the answer, named with the reason, never the whole request or a hang.
Generic bad input is tests/test_bad_input.py's; the OpenAPI contract tests/test_contract.py's.
"""

import time
from pathlib import Path

import pytest

from mlpatterns.runner.watchdog import group_alive
from mlpatterns.testing import assert_healthy, assert_refused, start_pattern

PATTERN = Path(__file__).parents[1]
BACKENDS = ["setosa", "versicolor", "virginica"]
SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [5.9, 3.0, 4.2, 1.5]
VIRGINICA = [6.3, 3.3, 6.0, 2.5]
ODD = [1.0, 2.0, 3.0, 4.0]  # no likely species: the book's example of a spread answer
# uvloop (libuv) keeps timers in whole milliseconds from a clock read once per loop round, so a sleep or a timeout
# may end up to about a millisecond early: a 0.5 s timeout was once measured at 0.4998 s.
TIMER_SLACK = 0.01


@pytest.fixture(scope="module")
def proxy(pattern):
    return pattern.client("proxy")


def direct(pattern, rows: list) -> dict[str, list]:
    """Each backend's own answer, asked of it without the proxy."""
    return {name: pattern.client(name).post("/predict", json={"data": rows}).json()["prediction"] for name in BACKENDS}


def timed(client, path: str, rows: list):
    start = time.perf_counter()
    response = client.post(path, json={"data": rows})
    return response, time.perf_counter() - start


def test_backends_are_found_in_the_service_variables(pattern, proxy):
    metadata = proxy.get("/metadata").json()
    assert metadata["backends"] == {name: pattern.url(name) for name in BACKENDS}
    health = proxy.get("/health/all").json()
    assert list(health) == BACKENDS
    for part in health.values():
        assert part["health"] == "ok" and part["status"] == 200 and part["seconds"] >= 0


def test_predict_gives_every_backends_answer(pattern, proxy):
    rows = [SETOSA, VERSICOLOR, VIRGINICA, ODD]
    response = proxy.post("/predict", json={"data": rows})
    answer = response.json()
    assert list(answer) == BACKENDS
    expected = direct(pattern, rows)
    for name in BACKENDS:
        assert answer[name]["status"] == 200
        assert answer[name]["prediction"] == expected[name]  # passed through as the backend wrote it
    assert [entry.split(";")[0] for entry in response.headers["server-timing"].split(", ")] == BACKENDS


def test_the_book_test_routes_fan_out(pattern, proxy):
    own = {name: pattern.client(name).get("/predict/test").json()["prediction"] for name in BACKENDS}
    for path in ("/predict/get/test", "/predict/post/test"):
        answer = proxy.get(path).json()
        assert {name: answer[name]["prediction"] for name in BACKENDS} == own, path


def test_label_is_the_surest_backend_for_each_row(pattern, proxy):
    for row, species in [(SETOSA, "setosa"), (VERSICOLOR, "versicolor"), (VIRGINICA, "virginica"), (ODD, "virginica")]:
        answer = proxy.post("/predict/label", json={"data": [row]}).json()
        positive = {name: scores[0][1] for name, scores in direct(pattern, [row]).items()}  # class 1: "is it"
        assert answer["prediction"] == {"label": species, "proba": pytest.approx(positive[species])}
        assert answer["prediction"]["proba"] == pytest.approx(max(positive.values()))
        assert {name: part["status"] for name, part in answer["backends"].items()} == dict.fromkeys(BACKENDS, 200)
    several = proxy.post("/predict/label", json={"data": [VIRGINICA, SETOSA, VERSICOLOR]}).json()["prediction"]
    assert [best["label"] for best in several] == ["virginica", "setosa", "versicolor"]


def test_bad_input_is_refused_by_the_proxy_or_passed_on(proxy):
    assert_refused(proxy.post("/predict/label", json={"data": []}), 422, "at least 1 item")
    # The row width is the models' to judge: all three refuse it, and the proxy passes their word on.
    assert_refused(proxy.post("/predict", json={"data": [SETOSA[:3]]}), 422, "each row must have shape 4")
    assert_refused(proxy.post("/predict/label", json={"data": [[1e39, 0, 0, 0]]}), 422)
    # Too many rows: refused before any backend is asked.
    assert_refused(proxy.post("/predict", json={"data": [SETOSA] * 10_001}), 413, "at most 10000 rows; got 10001")
    assert_healthy(proxy)


def test_backends_are_asked_in_parallel():
    """Each backend waits a known time before answering: the proxy's answer takes about the slowest, not the sum."""
    delays = {"setosa": 0.3, "versicolor": 0.6, "virginica": 0.9}
    overrides = {name: {"RESPONSE_DELAY_SECONDS": str(delay)} for name, delay in delays.items()}
    with start_pattern(PATTERN, overrides=overrides) as started:
        proxy = started.client("proxy")
        for path in ("/predict", "/predict/label"):
            response, seconds = timed(proxy, path, [SETOSA])
            assert response.status_code == 200, response.text
            parts = response.json() if path == "/predict" else response.json()["backends"]
            for name, delay in delays.items():
                assert parts[name]["status"] == 200
                assert parts[name]["seconds"] >= delay - TIMER_SLACK
            # Any two backends asked in turn would take at least the slowest plus the quickest.
            slowest, quickest = max(delays.values()), min(delays.values())
            assert slowest - TIMER_SLACK <= seconds < slowest + quickest, f"{path}: {seconds:.2f} s for {delays}"


def test_a_slow_backend_is_named_as_timed_out():
    overrides = {"proxy": {"BACKEND_TIMEOUT_SECONDS": "0.5"}, "virginica": {"RESPONSE_DELAY_SECONDS": "5"}}
    with start_pattern(PATTERN, overrides=overrides) as started:
        proxy = started.client("proxy")
        response, seconds = timed(proxy, "/predict", [VIRGINICA])
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["virginica"]["status"] == 504
        assert answer["virginica"]["detail"] == "upstream 'virginica' did not answer within 0.5 s"
        assert answer["virginica"]["seconds"] >= 0.5 - TIMER_SLACK and "prediction" not in answer["virginica"]
        assert all(answer[name]["status"] == 200 and "prediction" in answer[name] for name in ["setosa", "versicolor"])
        assert seconds < 0.5 + 2.0, "the proxy waited for the slow backend"  # not its 5 s
        label = proxy.post("/predict/label", json={"data": [VIRGINICA]}).json()
        assert label["prediction"]["label"] in ("setosa", "versicolor")  # the best of those that answered
        assert label["backends"]["virginica"]["status"] == 504
        assert proxy.get("/health/all").json()["virginica"]["status"] == 200  # slow to predict, not dead


def test_a_dead_backend_is_named_and_all_dead_is_a_503():
    with start_pattern(PATTERN) as started:
        proxy = started.client("proxy")
        kill(started, "virginica")
        answer = proxy.post("/predict", json={"data": [SETOSA]}).json()
        assert answer["virginica"]["status"] == 503
        assert answer["virginica"]["detail"].startswith("upstream 'virginica' is unavailable")
        assert "prediction" not in answer["virginica"]
        assert all(answer[name]["status"] == 200 and "prediction" in answer[name] for name in ["setosa", "versicolor"])

        kill(started, "setosa", "versicolor", "virginica")  # virginica may be back already: restart: unless-stopped
        response = proxy.post("/predict/label", json={"data": [SETOSA]})
        assert response.status_code == 503, response.text
        detail = response.json()["detail"]
        assert detail.startswith("no backend answered: ")
        for name in BACKENDS:
            assert f"upstream '{name}' is unavailable" in detail

        # The backends restart (their compose restart policy); the proxy, never restarted, answers in full again.
        deadline = time.monotonic() + 60
        while not all_healthy(proxy):
            assert time.monotonic() < deadline, "the backends did not come back"
            time.sleep(0.2)
        assert proxy.post("/predict/label", json={"data": [SETOSA]}).json()["prediction"]["label"] == "setosa"


def kill(started, *names: str) -> None:
    """SIGKILL each service's gunicorn and wait until its whole process group (its worker too) is gone. The
    runner restarts it 0.5 s later at the earliest (and it then takes a while to load), long enough to ask."""
    groups = [started.run.kill(name).pid for name in names]
    deadline = time.monotonic() + 15
    while any(group_alive(group) for group in groups):
        assert time.monotonic() < deadline, f"{names} still running"
        time.sleep(0.02)


def all_healthy(proxy) -> bool:
    response = proxy.get("/health/all")
    return response.status_code == 200 and all(part["status"] == 200 for part in response.json().values())
