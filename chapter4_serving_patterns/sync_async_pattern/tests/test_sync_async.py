"""End to end: the sync_async pattern started by the local runner (Redis, the proxy, two worker processes).

The workers run with WORK_DELAY_SECONDS=1.5, a stand-in for a heavy model, so that "the sync answer does not wait
for the heavy model" is a fact of the run and not of a fast machine: the POST's answer comes while its job is
still unfinished, and the job finishes after it. The proxy's states that need no worker (no worker alive, Redis
down) are tested on the proxy app alone, against a real Redis without workers and a stopped one.
"""

import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from chapter4_serving_patterns.sync_async_pattern.app import create_app
from chapter4_serving_patterns.sync_async_pattern.settings import ProxySettings
from mlpatterns.images import sample_digits
from mlpatterns.runner.backing import RedisServer, free_port
from mlpatterns.testing import assert_healthy, assert_refused, metric, start_pattern

PATTERN = Path(__file__).parents[1]
DIGITS = sample_digits()
WORK_DELAY = 1.5  # seconds each heavy job takes in this start
LABELS = {str(n): str(n) for n in range(10)}


@pytest.fixture(scope="module")
def started():
    with start_pattern(PATTERN, overrides={"worker": {"WORK_DELAY_SECONDS": str(WORK_DELAY)}}) as run:
        yield run


def wait_finished(proxy: httpx.Client, ids: list[str], timeout: float = 60.0) -> list[dict]:
    deadline, finished = time.monotonic() + timeout, {}
    while len(finished) < len(ids):
        assert time.monotonic() < deadline, f"unfinished after {timeout} s: {set(ids) - set(finished)}"
        for job_id in set(ids) - set(finished):
            job = proxy.get(f"/job/{job_id}").json()
            if job["state"] in ("done", "failed"):
                finished[job_id] = job
        time.sleep(0.05)
    return [finished[job_id] for job_id in ids]


SUBMITTED = 'job_queue_submitted_total{queue="jobs"}'
SYNC_MODEL_CALLS = 'model_stage_seconds_count{model="digits_linear",stage="model"}'


def test_health_labels_and_metadata(started):
    proxy = started.client("proxy")
    assert proxy.get("/health").json() == {"health": "ok"}
    assert proxy.get("/label").json() == LABELS
    metadata = proxy.get("/metadata").json()
    assert (metadata["sync_model"], metadata["async_model"]) == ("digits_linear", "cifar10")
    assert (metadata["data_structure"], metadata["prediction_structure"]) == ("(1, 3, 32, 32)", "(1, 10)")
    assert metadata["data_sample"] == [DIGITS["7"]]


def test_health_all_says_each_model_is_ok_and_counts_the_workers(started):
    proxy = started.client("proxy")
    deadline = time.monotonic() + 10  # a worker beats in Redis a moment after it touches its heartbeat file
    while (health := proxy.get("/health/all").json())["async_model"].get("workers") != 2:
        assert time.monotonic() < deadline, health
        time.sleep(0.1)
    assert health == {
        "sync_model": {"model": "digits_linear", "health": "ok"},
        "async_model": {"model": "cifar10", "health": "ok", "workers": 2},
    }


def test_the_sync_answer_comes_first_and_the_heavy_answer_later(started):
    proxy = started.client("proxy")
    posted = time.time()
    answer = proxy.post("/predict", json={"image_data": DIGITS["3"]})
    answered = time.time()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["prediction"]) == ("digits_linear", "3")
    assert len(body["scores"]) == 10 and sum(body["scores"]) == pytest.approx(1.0, abs=1e-4)
    assert uuid.UUID(body["job_id"]).version == 4

    # The job is stored before the answer, and unfinished when it comes: the heavy model takes 1.5 s.
    assert proxy.get(f"/job/{body['job_id']}").json()["state"] in ("pending", "running")
    (job,) = wait_finished(proxy, [body["job_id"]])
    assert (job["state"], job["prediction"], job["model"], job["error"]) == ("done", "3", "cifar10", None)
    assert job["scores"][3] == max(job["scores"])
    # The order is the behaviour (same host, same clock): the job was stored between the POST and its answer,
    # and finished after the answer, at least the heavy model's time after it was taken.
    assert posted <= job["submitted_at"] <= answered < job["finished_at"]
    assert job["finished_at"] - job["started_at"] >= WORK_DELAY
    # A generous bound, since the answer must not include the heavy model: decoding a 32x32 PNG and the
    # logistic regression take milliseconds, the heavy model 1.5 s.
    assert answered - posted < WORK_DELAY


def test_every_sample_digit_gets_both_answers_right(started):
    proxy = started.client("proxy")
    before = metric(proxy, SYNC_MODEL_CALLS)
    test = proxy.get("/predict/test")
    answers = [test] + [proxy.post("/predict", json={"image_data": DIGITS[label]}) for label in sorted(DIGITS)]
    assert {answer.status_code for answer in answers} == {200}
    assert [answer.json()["prediction"] for answer in answers] == ["7"] + sorted(DIGITS)  # the sync model's

    jobs = wait_finished(proxy, [answer.json()["job_id"] for answer in answers])

    assert [job["prediction"] for job in jobs] == ["7"] + sorted(DIGITS)  # the heavy model's
    assert {(job["state"], job["model"], job["attempts"]) for job in jobs} == {("done", "cifar10", 1)}
    assert metric(proxy, SYNC_MODEL_CALLS) - before == 11  # the sync model's latency: one figure per answer


def test_bad_input_is_refused_before_anything_is_queued(started):
    proxy = started.client("proxy")
    before = (metric(proxy, SUBMITTED), metric(proxy, SYNC_MODEL_CALLS))
    assert_refused(proxy.post("/predict", json={"image_data": "bm90IGFuIGltYWdl"}), 422, "image_data is not an image")
    assert_refused(proxy.post("/predict", json={"image_data": "not base64!"}), 422, "image_data is not base64")
    assert_refused(proxy.post("/predict", json={"image_data": ""}), 422, "at least 1 character")
    assert_refused(proxy.post("/predict", json={"data": [DIGITS["1"]]}), 422, "image_data")
    assert (metric(proxy, SUBMITTED), metric(proxy, SYNC_MODEL_CALLS)) == before  # no job, no model call
    assert_healthy(proxy)


def test_an_unknown_job_is_a_404(started):
    assert_refused(started.client("proxy").get(f"/job/{uuid.uuid4()}"), 404, "unknown, or its record expired")


def test_metrics_show_the_queue_and_the_sync_models_latency(started):
    proxy = started.client("proxy")
    before = metric(proxy, SUBMITTED)
    answer = proxy.post("/predict", json={"image_data": DIGITS["5"]})
    text = proxy.get("/metrics").text
    assert metric(proxy, SUBMITTED) == before + 1
    assert 'job_queue_jobs{queue="jobs",state="pending"}' in text and 'job_queue_up{queue="jobs"} 1.0' in text
    assert metric(proxy, 'model_stage_seconds_bucket{le="0.01",model="digits_linear",stage="model"}') >= 1
    wait_finished(proxy, [answer.json()["job_id"]])


# -- the proxy alone: the states of the heavy side that a running pattern does not show --------------------


def test_health_all_says_when_no_worker_is_alive(redis_url):
    with TestClient(create_app(ProxySettings(redis_url=redis_url, queue_name="no-workers"))) as proxy:
        health = proxy.get("/health/all").json()
        answer = proxy.post("/predict", json={"image_data": DIGITS["4"]})  # the job waits for a worker
    assert health == {
        "sync_model": {"model": "digits_linear", "health": "ok"},
        "async_model": {
            "model": "cifar10",
            "health": "ng",
            "workers": 0,
            "detail": "no worker heard from in the last 60 s: jobs wait until one starts",
        },
    }
    assert (answer.status_code, answer.json()["prediction"]) == (200, "4")


def test_with_redis_down_predict_is_a_503_and_health_all_says_why():
    server = RedisServer(free_port()).start()
    settings = ProxySettings(redis_url=server.url, redis_timeout_seconds=0.5)
    server.stop()
    with TestClient(create_app(settings)) as proxy:
        answer = proxy.post("/predict", json={"image_data": DIGITS["4"]})
        health = proxy.get("/health/all").json()
    # No answer without the job the client would ask for: the sync answer is not sent alone.
    assert (answer.status_code, answer.json()) == (503, {"detail": "redis is unavailable; try again later"})
    assert health["sync_model"]["health"] == "ok"
    assert health["async_model"]["health"] == "ng"
    assert health["async_model"]["detail"].startswith("Redis does not answer: ")
