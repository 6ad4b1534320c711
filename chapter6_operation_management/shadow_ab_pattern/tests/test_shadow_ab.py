"""End to end: the proxy, model A (iris-svc) and model B (iris-rf) started by the local runner, as `make up` does.

What the pattern promises: the client only ever gets A's answers (each echoing its job id); every request also
reaches B; both predictions are recorded under the request's one id, each the real output of its model; and B
dead or frozen changes neither the client's answers nor its time. Each model's records are read from its
prediction log file (LOG_PATH in the run's directory), and checked against the two models run in this process.
Generic bad input is tests/test_bad_input.py's (through the proxy: A's answers passed on); the OpenAPI contract
tests/test_contract.py's; the proxy's numbers against the Istio objects test_istio_policy.py's.
"""

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlpatterns.predictor import OnnxPredictor
from mlpatterns.runner.watchdog import group_alive
from mlpatterns.testing import assert_healthy, assert_refused, metric, start_pattern

PATTERN = Path(__file__).parents[1]
SAMPLE = [5.1, 3.5, 1.4, 0.2]
ROWS = [SAMPLE, [5.9, 3.0, 4.2, 1.5], [6.3, 3.3, 6.0, 2.5], [1.0, 2.0, 3.0, 4.0], [6.3, 2.8, 5.1, 1.5]]
DISAGREEING = [6.3, 2.8, 5.1, 1.5]  # A says versicolor, B virginica: the two answers can be told apart
# A request through the proxy takes milliseconds; if it waited for a copy to B, it would take B's timeout.
MIRROR_TIMEOUT = 2.0  # MIRROR_TIMEOUT_SECONDS in docker-compose.yml
ANSWER_BOUND = 1.0  # seconds per request, well below the mirror's timeout


class Model:
    """One of the two models, run in this process: what its service must have answered and recorded."""

    def __init__(self, name: str):
        self.predictor = OnnxPredictor(Path(f"models/{name}/model.onnx"), Path(f"models/{name}/labels.json")).load()

    def scores(self, rows: list) -> np.ndarray:
        return self.predictor.predict(np.asarray(rows, dtype=np.float32)).scores

    def labels(self, rows: list) -> list[str]:
        return [self.predictor.labels[int(c)] for c in self.predictor.predict(np.asarray(rows, np.float32)).classes]


@pytest.fixture(scope="module")
def models() -> dict[str, Model]:
    return {"a": Model("iris_svc"), "b": Model("iris_rf")}


def same_scores(answered: list, expected: np.ndarray) -> bool:
    """JSON's shortest float32 text read back as float32 is the model's float32 exactly."""
    return np.array_equal(np.asarray(answered, dtype=np.float32), expected)


def log_path(started, service: str) -> Path:
    """The service's LOG_PATH in this run (compose's x-local value, `{run_dir}` filled in)."""
    value = started.run.running[service].service.environment["LOG_PATH"]
    return Path(value.replace("{run_dir}", started.run.run_dir))


def records(started, service: str) -> dict[str, list[dict]]:
    """Every record the service has written so far, by request id."""
    path = log_path(started, service)
    found: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        record = json.loads(line)
        found.setdefault(record["request_id"], []).append(record)
    return found


def records_of(started, service: str, ids: set[str], timeout: float = 15.0) -> dict[str, list[dict]]:
    """The service's records of these request ids, once every id has one (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {rid: rs for rid, rs in records(started, service).items() if rid in ids}
        if len(found) == len(ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def timed(client: httpx.Client, method: str, path: str, **kwargs) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = client.request(method, path, **kwargs)
    return response, time.perf_counter() - start


def mirrors(started) -> dict[str, float]:
    proxy = started.client("proxy")
    outcomes = ("mirrored", "failed", "dropped")
    return {o: metric(proxy, f'shadow_mirror_requests_total{{outcome="{o}"}}') for o in outcomes}


def settled(started) -> dict[str, float]:
    """The copies' counts once none is in flight (an earlier test's copies may still be on their way)."""
    wait_for(lambda: metric(started.client("proxy"), "shadow_mirrors_in_flight") == 0, what="the copies' answers")
    return mirrors(started)


def wait_for(condition, timeout: float = 15.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.05)


# -- the client sees A only ------------------------------------------------------------------------------------


def test_the_client_gets_model_a_s_answers_with_its_job_id(pattern, models):
    proxy = pattern.client("proxy")
    for number, row in enumerate(ROWS):
        job = f"job-{number}"
        scores = proxy.post(f"/predict/{job}", json={"data": [row]}).json()
        assert scores["job_id"] == job and same_scores(scores["prediction"], models["a"].scores([row]))
        labels = proxy.post(f"/predict-label/{job}", json={"data": [row]}).json()
        assert labels == {"job_id": job, "prediction": models["a"].labels([row])}
    batch = proxy.post("/predict-label/batch_1", json={"data": ROWS}).json()
    assert batch == {"job_id": "batch_1", "prediction": models["a"].labels(ROWS)}  # every row answered
    test = proxy.get("/predict-test/abcd").json()
    assert test["job_id"] == "abcd" and same_scores(test["prediction"], models["a"].scores([SAMPLE]))
    assert proxy.get("/predict-test-label/abcd").json() == {"job_id": "abcd", "prediction": ["setosa"]}
    # B would have answered otherwise: the test can tell the two apart.
    assert models["a"].labels([DISAGREEING]) != models["b"].labels([DISAGREEING])
    assert proxy.post("/predict-label/x", json={"data": [DISAGREEING]}).json()["prediction"] == ["versicolor"]


def test_the_proxy_passes_a_s_answer_on_as_it_is(pattern):
    proxy, a = pattern.client("proxy"), pattern.client("iris-svc")
    for method, path, body in [
        ("GET", "/metadata", None),
        ("GET", "/label", None),
        ("POST", "/predict/job", {"data": [SAMPLE, SAMPLE]}),
        ("POST", "/predict/job", {"data": [[5.1, 3.5]]}),
        ("DELETE", "/predict/job", None),
        ("GET", "/no/such/path", None),
    ]:
        through, direct = proxy.request(method, path, json=body), a.request(method, path, json=body)
        assert (through.status_code, through.content) == (direct.status_code, direct.content), path
        assert through.headers["content-type"] == direct.headers["content-type"]
    assert proxy.delete("/predict/job").headers["allow"] == "POST"  # A's headers too
    # The API documented to clients is A's.
    assert proxy.get("/openapi.json").json() == a.get("/openapi.json").json()


def test_the_proxy_answers_its_own_paths_and_forwards_every_other_request(pattern):
    proxy, a = pattern.client("proxy"), pattern.client("iris-svc")
    assert proxy.get("/health").json() == {"health": "ok"}
    assert "shadow_mirror_requests_total" in proxy.get("/metrics").text
    assert list(proxy.get("/proxy/openapi.json").json()["paths"]) == ["/health"]  # its own document, not A's
    assert proxy.get("/proxy/docs").status_code == 200
    assert proxy.get("/proxy/static-offline-docs/swagger-ui.css").status_code == 200
    # A method that the proxy's own route does not take is A's to answer, on any path.
    for method, path in [("POST", "/health"), ("HEAD", "/health"), ("POST", "/proxy/docs"), ("GET", "/docs")]:
        through, direct = proxy.request(method, path), a.request(method, path)
        assert (through.status_code, through.content) == (direct.status_code, direct.content), (method, path)
    # A method that is never forwarded is refused by the proxy itself.
    refused = proxy.request("TRACE", "/predict/job")
    assert refused.status_code == 405 and "POST" in refused.headers["allow"]
    # Forwarded requests are counted under one path label, whatever their path.
    counted = 'http_requests_total{method="GET",path="/{path:path}",status="200"}'
    before = metric(proxy, counted)
    assert proxy.get("/metadata").status_code == proxy.get("/label").status_code == 200
    wait_for(lambda: metric(proxy, counted) == before + 2, what="the two forwarded requests counted")


# -- B gets every request, and both are recorded ------------------------------------------------------------


def test_both_models_record_each_request_under_its_one_id_with_their_own_prediction(pattern, models):
    proxy = pattern.client("proxy")
    before = settled(pattern)
    sent = {}  # request id -> (job id, endpoint, rows, the client's answer)
    for number, row in enumerate(ROWS):
        rid = f"shadow-test-{number}"
        rows = [row, ROWS[(number + 1) % len(ROWS)]][: 1 + number % 2]
        answer = proxy.post(f"/predict/j{number}", json={"data": rows}, headers={"X-Request-ID": rid})
        assert answer.headers["x-request-id"] == rid
        sent[rid] = (f"j{number}", "/predict", rows, answer.json())
    # Without an X-Request-ID the proxy makes one, answers with it, and both copies carry it.
    answer = proxy.get("/predict-test-label/t1")
    sent[answer.headers["x-request-id"]] = ("t1", "/predict-test-label", [SAMPLE], answer.json())

    in_a, in_b = records_of(pattern, "iris-svc", set(sent)), records_of(pattern, "iris-rf", set(sent))
    assert set(in_a) == set(in_b) == set(sent)
    for rid, (job, endpoint, rows, answer) in sent.items():
        (a,), (b,) = in_a[rid], in_b[rid]  # one record each
        for record, model, name in [(a, models["a"], "iris_svc"), (b, models["b"], "iris_rf")]:
            assert (record["job_id"], record["endpoint"], record["input"]) == (job, endpoint, rows)
            assert record["model"] == name
            assert same_scores(record["prediction"], model.scores(rows)), record
            assert record["label"] == model.labels(rows)
        if endpoint == "/predict":
            assert a["prediction"] == answer["prediction"]  # what the client got is A's record
    wait_for(lambda: mirrors(pattern)["mirrored"] - before["mirrored"] >= len(sent), what="the mirrored count")
    after = mirrors(pattern)
    assert after["mirrored"] - before["mirrored"] == len(sent)
    assert (after["failed"], after["dropped"]) == (before["failed"], before["dropped"])


# -- bad input ---------------------------------------------------------------------------------------------


def test_bad_job_ids_and_bodies_are_clear_4xx_and_make_no_record(pattern):
    proxy = pattern.client("proxy")
    marker_before = "bad-input-marker-0"
    proxy.get("/predict-test/x", headers={"X-Request-ID": marker_before})
    cases = [
        ("POST", "/predict/bad!id", {"data": [SAMPLE]}, 422, "String should match pattern '^[A-Za-z0-9_-]+$'"),
        ("GET", "/predict-test/" + "a" * 65, None, 422, "String should have at most 64 characters"),
        ("GET", "/predict-test-label/a%20b", None, 422, "String should match pattern"),
        ("POST", "/predict/ok", {"data": [[5.1, 3.5, 1.4]]}, 422, "each row must have shape 4; got rows of shape 3"),
        ("POST", "/predict-label/ok", {"data": []}, 422, "at least 1 item"),
        ("POST", "/predict/ok", {"rows": [SAMPLE]}, 422, "Field required"),
        ("POST", "/predict/ok", {"data": [["5.1", 3.5, 1.4, 0.2]]}, 422, "valid number"),
        ("POST", "/predict", {"data": [SAMPLE]}, 404, "Not Found"),  # no job id
        ("GET", "/predict/ok", None, 405, "Method Not Allowed"),
    ]
    before = settled(pattern)
    ids = set()
    for number, (method, path, body, status, message) in enumerate(cases):
        rid = f"bad-input-{number}"
        ids.add(rid)
        assert_refused(proxy.request(method, path, json=body, headers={"X-Request-ID": rid}), status, message)
    not_json = proxy.post("/predict/ok", content=b"{", headers={"content-type": "application/json"})
    assert_refused(not_json, 400, "JSON decode error")
    # Refused by the proxy itself, before A or B: a body over MAX_BODY_BYTES.
    too_large = proxy.post("/predict/ok", content=b"x" * (1_048_576 + 1), headers={"X-Request-ID": "bad-input-big"})
    assert_refused(too_large, 413, "request body is larger than 1048576 bytes")
    ids.add("bad-input-big")
    # B has answered every copy (the 4xx too; the oversized body was never forwarded), then a last marker.
    copies = len(cases) + 1
    wait_for(lambda: mirrors(pattern)["mirrored"] - before["mirrored"] >= copies, what="B's answers to the copies")
    marker = "bad-input-marker-1"
    proxy.get("/predict-test/x", headers={"X-Request-ID": marker})
    for service in ("iris-svc", "iris-rf"):  # both have the markers, and no record of a refused request
        assert records_of(pattern, service, {marker_before, marker}), service
        assert not set(records(pattern, service)) & ids, service
    assert_healthy(proxy)


# -- B dead or frozen ----------------------------------------------------------------------------------------


def assert_answers_are_a_s_and_prompt(proxy: httpx.Client, model: Model, requests: int) -> None:
    for number in range(requests):
        row = ROWS[number % len(ROWS)]
        response, seconds = timed(proxy, "POST", f"/predict/p{number}", json={"data": [row]})
        assert response.status_code == 200, response.text
        assert same_scores(response.json()["prediction"], model.scores([row]))
        assert seconds < ANSWER_BOUND, f"request {number} took {seconds:.2f} s (the mirror's timeout: {MIRROR_TIMEOUT})"


@contextmanager
def frozen(started, service: str) -> Iterator[None]:
    """SIGSTOP the service's whole process group (gunicorn's master and worker: the runner started the master in
    a group of its own), SIGCONT it on the way out. A frozen server still has its connections accepted by the
    kernel: its callers wait, as for a server that is alive but stuck."""
    group = started.run.processes(service)[0].pid
    os.killpg(group, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(group, signal.SIGCONT)


def test_a_frozen_shadow_changes_neither_the_answers_nor_their_time(pattern, models):
    proxy = pattern.client("proxy")
    before = settled(pattern)
    with frozen(pattern, "iris-rf"):
        assert_answers_are_a_s_and_prompt(proxy, models["a"], 10)
        # Each copy waits for B until its timeout, then counts as failed; the answers did not wait.
        wait_for(lambda: mirrors(pattern)["failed"] - before["failed"] >= 10, timeout=MIRROR_TIMEOUT + 10)
    assert mirrors(pattern)["failed"] - before["failed"] == 10
    assert "(shadow_mirror_requests_total counts every copy)" in pattern.logs("proxy")  # warned, once in a while
    wait_for(lambda: pattern.client("iris-rf").get("/health").status_code == 200, what="B answering again")


def test_a_dead_shadow_changes_neither_the_answers_nor_their_time(pattern, models):
    proxy = pattern.client("proxy")
    before = settled(pattern)
    group = pattern.run.kill("iris-rf").pid  # SIGKILL; the runner restarts it (restart: unless-stopped)
    wait_for(lambda: not group_alive(group), what="B's end")
    assert_answers_are_a_s_and_prompt(proxy, models["a"], 10)  # B is down for 0.5 s at least, and its start
    wait_for(lambda: mirrors(pattern)["failed"] > before["failed"], what="a failed copy")
    # B back (the runner restarted it), copies reach it again, the proxy never restarted.
    wait_for(lambda: healthy(pattern.client("iris-rf")), timeout=60, what="B's restart")
    answer = proxy.get("/predict-test/back")
    assert records_of(pattern, "iris-rf", {answer.headers["x-request-id"]})


def healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def test_copies_beyond_the_limit_are_dropped_and_counted_never_queued():
    # One proxy worker, at most 4 copies in flight, each allowed 30 s: while B is frozen, the 5th copy on is dropped.
    overrides = {"proxy": {"WORKERS": "1", "MIRROR_MAX_IN_FLIGHT": "4", "MIRROR_TIMEOUT_SECONDS": "30"}}
    with start_pattern(PATTERN, overrides=overrides) as started:
        proxy = started.client("proxy")
        a = Model("iris_svc")
        ids = []
        with frozen(started, "iris-rf"):
            for number in range(20):
                response, seconds = timed(proxy, "GET", f"/predict-test/d{number}")
                assert response.status_code == 200 and seconds < ANSWER_BOUND
                assert same_scores(response.json()["prediction"], a.scores([SAMPLE]))
                ids.append(response.headers["x-request-id"])
            assert mirrors(started) == {"mirrored": 0, "failed": 0, "dropped": 16}
            assert metric(proxy, "shadow_mirrors_in_flight") == 4
        # Thawed, B answers the 4 copies that waited; the 16 dropped were never sent.
        wait_for(lambda: mirrors(started)["mirrored"] == 4, what="the 4 copies' answers")
        assert set(records_of(started, "iris-svc", set(ids))) == set(ids)
        assert set(records_of(started, "iris-rf", set(ids[:4]))) == set(ids[:4])
        assert set(records(started, "iris-rf")) & set(ids) == set(ids[:4])
        assert metric(proxy, "shadow_mirrors_in_flight") == 0


async def get_concurrently(url: str, paths: list[str], connections: int = 16) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=connections)) as client:
        return await asyncio.gather(*(client.get(path) for path in paths))


def test_mirror_percent_copies_that_share_of_the_requests():
    requests, percent = 100, 50
    with start_pattern(PATTERN, overrides={"proxy": {"MIRROR_PERCENT": str(percent)}}) as started:
        answers = asyncio.run(get_concurrently(started.url("proxy"), [f"/predict-test/m{n}" for n in range(requests)]))
        assert [answer.status_code for answer in answers] == [200] * requests
        ids = {answer.headers["x-request-id"] for answer in answers}
        copied = settled(started)
        assert copied["failed"] == copied["dropped"] == 0
        # 99.99% of binomial(100, 0.5) lies within 4 standard deviations (5 requests) of 50.
        assert abs(copied["mirrored"] - requests * percent / 100) <= 4 * 5, copied
        assert len(records_of(started, "iris-svc", ids)) == requests
        in_b = records_of(started, "iris-rf", ids, timeout=1)  # those not copied never come
        assert len(in_b) == copied["mirrored"]
