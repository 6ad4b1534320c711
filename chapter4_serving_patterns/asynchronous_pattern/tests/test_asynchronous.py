"""End to end: the asynchronous pattern started by the local runner (Redis, the proxy, two worker processes).

Three starts: one at full speed (WORK_DELAY_SECONDS=0) for the API, 50 concurrent jobs and a job the model cannot
take; one with slow jobs and a deadline (WORK_DELAY_SECONDS=0.4, JOB_DEADLINE_SECONDS=0.6), in which late jobs
fail; one with slow jobs (WORK_DELAY_SECONDS=0.4, CLAIM_IDLE_SECONDS=2, RESULT_TTL_SECONDS=3) in which a worker
is killed with SIGKILL mid-job and the records then expire. Exactly once is read from the queue's own counters
on /metrics (a second result for a job is never stored, so `done` counts each job once) and from the records.
"""

import asyncio
import io
import socket
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from mlpatterns.images import sample_digits
from mlpatterns.jobs import JobQueue, QueueSettings
from mlpatterns.testing import assert_healthy, assert_refused, start_pattern

PATTERN = Path(__file__).parents[1]
DIGITS = sample_digits()
WORK_DELAY = 0.4  # seconds per job in the slow and deadline starts
DEADLINE = 0.6  # JOB_DEADLINE_SECONDS of the deadline start: 1.5 jobs' work


@pytest.fixture(scope="module")
def fast():
    with start_pattern(PATTERN, overrides={"worker": {"WORK_DELAY_SECONDS": "0"}}) as started:
        yield started


@pytest.fixture(scope="module")
def slow():
    worker = {"WORK_DELAY_SECONDS": str(WORK_DELAY), "CLAIM_IDLE_SECONDS": "2", "RESULT_TTL_SECONDS": "3"}
    with start_pattern(PATTERN, overrides={"worker": worker}) as started:
        yield started


@pytest.fixture(scope="module")
def deadline():
    worker = {"WORK_DELAY_SECONDS": str(WORK_DELAY), "JOB_DEADLINE_SECONDS": str(DEADLINE)}
    with start_pattern(PATTERN, overrides={"worker": worker}) as started:
        yield started


def redis_url(started) -> str:
    return f"redis://127.0.0.1:{started.port('redis')}/0"


def submit(proxy: httpx.Client, image: str) -> str:
    answer = proxy.post("/predict", json={"image_data": image})
    assert answer.status_code == 202, answer.text
    return answer.json()["job_id"]


def submit_concurrently(proxy: httpx.Client, images: list[str]) -> list[str]:
    async def run() -> list[str]:
        async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as client:
            answers = await asyncio.gather(*(client.post("/predict", json={"image_data": i}) for i in images))
        assert {a.status_code for a in answers} == {202}
        return [a.json()["job_id"] for a in answers]

    return asyncio.run(run())


def wait_finished(proxy: httpx.Client, ids: list[str], timeout: float = 60.0) -> list[dict]:
    """Each job's record once it is finished (read then: in the slow start, records expire 3 s after)."""
    deadline, finished = time.monotonic() + timeout, {}
    while True:
        for job_id in ids:
            if job_id not in finished:
                job = job_record(proxy, job_id)
                if job["state"] in ("done", "failed"):
                    finished[job_id] = job
        if len(finished) == len(ids):
            return [finished[job_id] for job_id in ids]
        assert time.monotonic() < deadline, f"unfinished after {timeout} s: {set(ids) - set(finished)}"
        time.sleep(0.05)


def job_record(proxy: httpx.Client, job_id: str) -> dict:
    answer = proxy.get(f"/job/{job_id}")
    assert answer.status_code == 200, f"job {job_id}: {answer.status_code} {answer.text}"
    return answer.json()


def queue_metrics(proxy: httpx.Client) -> dict[str, float]:
    """The queue's figures from /metrics: {'job_queue_jobs{queue="jobs",state="running"}': 2.0, ...}."""
    figures = {}
    for line in proxy.get("/metrics").text.splitlines():
        if line.startswith("job_queue_"):
            name, value = line.rsplit(" ", 1)
            figures[name] = float(value)
    return figures


DONE = 'job_queue_finished_total{queue="jobs",state="done"}'
FAILED = 'job_queue_finished_total{queue="jobs",state="failed"}'
SUBMITTED = 'job_queue_submitted_total{queue="jobs"}'
LENGTH = 'job_queue_length{queue="jobs"}'
PENDING = 'job_queue_jobs{queue="jobs",state="pending"}'
RUNNING = 'job_queue_jobs{queue="jobs",state="running"}'


def test_health_and_labels(fast):
    proxy = fast.client("proxy")
    assert proxy.get("/health").json() == {"health": "ok"}
    assert proxy.get("/label").json() == {str(n): str(n) for n in range(10)}


def test_the_answer_is_a_job_id_and_the_job_is_stored_before_it(fast):
    proxy = fast.client("proxy")
    answer = proxy.post("/predict", json={"image_data": DIGITS["3"]})
    assert answer.status_code == 202
    job_id = answer.json()["job_id"]
    assert answer.headers["location"] == f"/job/{job_id}"
    assert uuid.UUID(job_id).version == 4 and str(uuid.UUID(job_id)) == job_id  # a full uuid, not 6 hex digits

    right_after = proxy.get(f"/job/{job_id}")
    assert right_after.status_code == 200
    assert right_after.json()["state"] in ("pending", "running", "done")

    (job,) = wait_finished(proxy, [job_id])
    assert (job["state"], job["prediction"], job["error"], job["attempts"]) == ("done", "3", None, 1)
    assert len(job["scores"]) == 10 and sum(job["scores"]) == pytest.approx(1.0, abs=1e-4)
    assert job["scores"][3] == max(job["scores"])
    assert job["submitted_at"] <= job["started_at"] <= job["finished_at"]


def test_the_sample_and_every_digit_get_their_label(fast):
    proxy = fast.client("proxy")
    test = proxy.get("/predict/test")
    assert test.status_code == 202
    ids = [test.json()["job_id"]] + [submit(proxy, DIGITS[label]) for label in sorted(DIGITS)]
    assert [job["prediction"] for job in wait_finished(proxy, ids)] == ["7"] + sorted(DIGITS)


def test_fifty_concurrent_jobs_on_two_workers_each_done_once(fast):
    proxy = fast.client("proxy")
    before = queue_metrics(proxy)
    labels = [str(n % 10) for n in range(50)]

    ids = submit_concurrently(proxy, [DIGITS[label] for label in labels])
    jobs = wait_finished(proxy, ids)

    assert len(set(ids)) == 50
    assert [job["prediction"] for job in jobs] == labels
    assert {job["state"] for job in jobs} == {"done"} and {job["attempts"] for job in jobs} == {1}
    workers = {process.pid for process in fast.run.processes("worker")}
    assert len(workers) == 2
    assert {job["worker"] for job in jobs} == {f"{socket.gethostname()}-{pid}" for pid in workers}  # both took some
    after = queue_metrics(proxy)
    assert (after[SUBMITTED] - before[SUBMITTED], after[DONE] - before[DONE], after[FAILED] - before[FAILED]) == (
        50,
        50,
        0,
    )
    assert (after[LENGTH], after[PENDING], after[RUNNING]) == (0, 0, 0)


def test_a_body_that_is_no_image_is_refused_at_submission(fast):
    proxy = fast.client("proxy")
    before = queue_metrics(proxy)[SUBMITTED]
    assert_refused(proxy.post("/predict", json={"image_data": "bm90IGFuIGltYWdl"}), 422, "image_data is not an image")
    assert_refused(proxy.post("/predict", json={"image_data": "not base64!"}), 422, "image_data is not base64")
    assert_refused(proxy.post("/predict", json={"image_data": ""}), 422, "at least 1 character")
    assert_refused(proxy.post("/predict", json={"data": [DIGITS["1"]]}), 422, "image_data")
    assert queue_metrics(proxy)[SUBMITTED] == before  # nothing was queued
    assert_healthy(proxy)


def test_an_unknown_job_is_a_404(fast):
    proxy = fast.client("proxy")
    assert_refused(proxy.get(f"/job/{uuid.uuid4()}"), 404, "unknown, or its record expired")


def test_a_job_the_model_cannot_take_fails_and_the_worker_goes_on(fast):
    """A job queued by another producer (a proxy of an older version): a 1x28x28 image, and JSON in place of an
    array. The model's own input check refuses the first when the worker predicts it."""
    proxy = fast.client("proxy")
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((1, 28, 28), np.float32), allow_pickle=False)

    async def queue_directly() -> list[str]:
        queue = JobQueue.from_settings(QueueSettings(redis_url=redis_url(fast)), expose_metrics=False)
        try:
            return [await queue.submit(buffer.getvalue()), await queue.submit({"items": [[1, 2]]})]
        finally:
            await queue.close()

    wrong_shape, not_an_array = asyncio.run(queue_directly())
    after = submit(proxy, DIGITS["5"])
    jobs = wait_finished(proxy, [wrong_shape, not_an_array, after])

    assert [job["state"] for job in jobs] == ["failed", "failed", "done"]
    assert jobs[0]["error"] == "InvalidInput: each item must have shape 3x32x32; got items of shape 1x28x28"
    assert jobs[1]["error"] == "TypeError: the payload must be an .npy image array, not dict"
    assert jobs[2]["prediction"] == "5"
    assert all(process.poll() is None for process in fast.run.processes("worker"))
    assert not fast.run.reports  # no worker exited


def test_a_worker_killed_mid_job_loses_nothing(slow):
    proxy = slow.client("proxy")
    victim = slow.run.processes("worker")[0]
    victim_name = f"{socket.gethostname()}-{victim.pid}"
    labels = [str(n % 10) for n in range(20)]
    ids = submit_concurrently(proxy, [DIGITS[label] for label in labels])

    # Mid-job: the victim holds a job it started less than half its work ago (WORK_DELAY_SECONDS), so the kill
    # comes before it could finish; the queue is deep meanwhile (both workers busy, jobs waiting), as /metrics shows.
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, "the victim never held a job while others waited"
        figures = queue_metrics(proxy)
        if not (figures[RUNNING] == 2 and figures[PENDING] >= 1):
            continue
        running = [job_record(proxy, job_id) for job_id in ids]
        held = [job for job in running if job["state"] == "running" and job["worker"] == victim_name]
        if held and time.time() - held[0]["started_at"] < WORK_DELAY / 2:
            slow.run.kill("worker", 0)
            break
    victim.wait(10)
    assert figures[LENGTH] == figures[RUNNING] + figures[PENDING]
    assert job_record(proxy, held[0]["job_id"])["state"] == "running"  # not lost, not yet taken over

    jobs = wait_finished(proxy, ids)

    assert [job["prediction"] for job in jobs] == labels
    assert {job["state"] for job in jobs} == {"done"}
    taken_over = [job for job in jobs if job["attempts"] == 2]
    assert [job["job_id"] for job in taken_over] == [held[0]["job_id"]]  # the one job it held, finished by another
    assert taken_over[0]["worker"] != victim_name
    assert {job["attempts"] for job in jobs if job not in taken_over} == {1}
    figures = queue_metrics(proxy)
    assert (figures[SUBMITTED], figures[DONE], figures[FAILED], figures[LENGTH]) == (20, 20, 0, 0)  # each job once


def test_finished_records_expire_and_nothing_accumulates(slow):
    proxy = slow.client("proxy")
    ids = submit_concurrently(proxy, [DIGITS["2"]] * 3)
    finished = wait_finished(proxy, ids)
    assert {job["state"] for job in finished} == {"done"}

    time.sleep(3.5)  # RESULT_TTL_SECONDS=3 in this start

    for job_id in ids:
        assert_refused(proxy.get(f"/job/{job_id}"), 404)
    client = redis.Redis.from_url(redis_url(slow))
    try:
        # No job record left; the live workers' set holds one name per worker process.
        assert sorted(client.scan_iter("jobs:*")) == [b"jobs:counts", b"jobs:stream", b"jobs:workers"]
        assert client.xlen("jobs:stream") == 0
    finally:
        client.close()


def test_a_job_past_its_deadline_fails_and_the_worker_goes_on(deadline):
    """Two workers, 0.4 s per job, a 0.6 s deadline: of 8 jobs submitted at once, jobs 5 to 8 cannot start before
    0.8 s (two rounds of two jobs), so they fail; a job fails if and only if it waited longer than the deadline."""
    proxy = deadline.client("proxy")
    ids = submit_concurrently(proxy, [DIGITS["4"]] * 8)
    jobs = wait_finished(proxy, ids)

    failed = [job for job in jobs if job["state"] == "failed"]
    assert len(failed) >= 4
    for job in jobs:
        if job["state"] == "failed":  # failed after the worker saw it late (its start was a moment before)
            assert (
                job["error"].startswith("DeadlineExceeded: waited ")
                and job["finished_at"] - job["submitted_at"] > DEADLINE
            ), job
            assert job["error"].endswith("in the queue, more than JOB_DEADLINE_SECONDS (0.6 s)")
            assert job["prediction"] is None
        else:
            assert (job["state"], job["prediction"]) == ("done", "4"), job
            assert job["started_at"] - job["submitted_at"] <= DEADLINE, job
    (after,) = wait_finished(proxy, [submit(proxy, DIGITS["8"])])  # the queue is empty again: in time
    assert (after["state"], after["prediction"]) == ("done", "8")
    assert not deadline.run.reports  # no worker exited
