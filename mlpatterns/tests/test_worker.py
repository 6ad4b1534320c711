"""run_worker in real processes against a real redis-server: several workers, a worker killed or stopped mid-job.

Each test has a queue of its own; the workers are `mlpatterns.tests.doubling_worker` subprocesses.
"""

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from mlpatterns.jobs import Job, JobQueue, Keys, QueueSettings, read_stats
from mlpatterns.redis_store import sync_client
from mlpatterns.runner.backing import free_port

ROOT = Path(__file__).resolve().parents[2]
_names = itertools.count()


@pytest.fixture
def settings(redis_url) -> QueueSettings:
    return QueueSettings(redis_url=redis_url, queue_name=f"test-worker-{next(_names)}")


@pytest.fixture
def client(settings) -> redis.Redis:
    return sync_client(settings)


@pytest.fixture
def start_worker(settings, tmp_path):
    """Start a worker process named `name`; every one still running is killed at the end of the test."""
    processes: list[subprocess.Popen] = []

    def start(name: str, **env) -> subprocess.Popen:
        environment = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": settings.redis_url,
            "QUEUE_NAME": settings.queue_name,
            "CONSUMER_NAME": name,
            "CLAIM_IDLE_SECONDS": "0.5",
            "BLOCK_MS": "100",
            **{key.upper(): str(value) for key, value in env.items()},
        }
        log = open(tmp_path / f"{name}.log", "w")  # closed with the process, below
        process = subprocess.Popen(
            [sys.executable, "-m", "mlpatterns.tests.doubling_worker"],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        process.log = log
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        process.log.close()


def submit(settings: QueueSettings, *payloads) -> list[str]:
    async def run():
        queue = JobQueue.from_settings(settings, expose_metrics=False)
        ids = [await queue.submit(payload) for payload in payloads]
        await queue.close()
        return ids

    return asyncio.run(run())


def job(client: redis.Redis, settings: QueueSettings, job_id: str) -> Job:
    return Job.from_record(job_id, client.hgetall(Keys(settings.queue_name).job(job_id)))


def wait_until(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_for_consumers(client: redis.Redis, settings: QueueSettings, *names: str) -> None:
    """A worker joins the consumer group with its first read: from then on it takes jobs."""

    def joined() -> bool:
        try:
            consumers = client.xinfo_consumers(Keys(settings.queue_name).stream, "workers")
        except redis.ResponseError:
            return False
        return set(names) <= {consumer["name"].decode() for consumer in consumers}

    wait_until(joined, what=f"workers {names} to start")


def runs(client: redis.Redis, job_id: str) -> int:
    return int(client.get(f"test-runs:{job_id}") or 0)


def test_fifty_jobs_on_two_workers_each_done_exactly_once(settings, client, start_worker):
    start_worker("w1"), start_worker("w2")
    wait_for_consumers(client, settings, "w1", "w2")

    ids = submit(settings, *({"n": n, "sleep": 0.01} for n in range(50)))
    wait_until(lambda: read_stats(client, settings.queue_name).done == 50, what="50 jobs done")

    jobs = [job(client, settings, job_id) for job_id in ids]
    assert [j.result["double"] for j in jobs] == [2 * n for n in range(50)]
    assert {j.state for j in jobs} == {"done"} and {j.attempts for j in jobs} == {1}
    assert [runs(client, job_id) for job_id in ids] == [1] * 50
    assert {j.worker for j in jobs} == {"w1", "w2"}  # both took a share
    stats = read_stats(client, settings.queue_name)
    assert (stats.length, stats.submitted, stats.done, stats.failed) == (0, 50, 50, 0)


def test_a_job_of_a_killed_worker_is_finished_by_another(settings, client, start_worker, tmp_path):
    release = tmp_path / "release"
    doomed = start_worker("doomed", claim_idle_seconds=1)
    (job_id,) = submit(settings, {"n": 21, "wait_for": str(release)})
    wait_until(lambda: job(client, settings, job_id).state == "running", what="the job to start")
    start_worker("survivor", claim_idle_seconds=1)
    wait_for_consumers(client, settings, "survivor")
    time.sleep(1.5)  # past the claim idle time: a worker that is alive keeps its job
    assert (job(client, settings, job_id).worker, runs(client, job_id)) == ("doomed", 1)

    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    release.touch()
    wait_until(lambda: job(client, settings, job_id).state == "done", what="the survivor to finish the job")

    finished = job(client, settings, job_id)
    assert (finished.result, finished.worker, finished.attempts) == (
        {"double": 42, "worker": "survivor"},
        "survivor",
        2,
    )
    assert read_stats(client, settings.queue_name).done == 1  # run twice, finished once
    assert read_stats(client, settings.queue_name).length == 0


def test_a_handler_error_fails_that_job_and_the_worker_goes_on(settings, client, start_worker):
    port = free_port()
    worker = start_worker("w1", metrics_port=port)
    bad, good = submit(settings, {"n": 1, "fail": True}, {"n": 2})
    wait_until(lambda: job(client, settings, good).state == "done", what="the second job")

    assert (job(client, settings, bad).state, job(client, settings, bad).error) == (
        "failed",
        "ValueError: cannot double 1",
    )
    assert job(client, settings, good).result == {"double": 4, "worker": "w1"}
    assert worker.poll() is None
    queue = f'queue="{settings.queue_name}"'

    def metrics_once_counted() -> str | None:
        # The job's record says done before the worker counts it: wait for the count, then read the rest.
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return text if f'worker_jobs_total{{outcome="done",{queue}}} 1.0' in text else None

    text = wait_until(metrics_once_counted, what="the done job's count")
    assert f'worker_jobs_total{{outcome="failed",{queue}}} 1.0' in text
    assert f'worker_job_duration_seconds_count{{outcome="failed",{queue}}} 1.0' in text


def test_sigterm_mid_job_finishes_the_job_then_exits_0(settings, client, start_worker):
    worker = start_worker("w1")
    (job_id,) = submit(settings, {"n": 5, "sleep": 1.0})
    wait_until(lambda: job(client, settings, job_id).state == "running", what="the job to start")

    worker.send_signal(signal.SIGTERM)

    assert worker.wait(15) == 0
    assert job(client, settings, job_id).state == "done"
    assert job(client, settings, job_id).result == {"double": 10, "worker": "w1"}


@pytest.mark.parametrize("how", ["second signal", "drain timeout"])
def test_a_stuck_job_does_not_hold_up_a_stop(settings, client, start_worker, tmp_path, how):
    worker = start_worker("w1", drain_timeout_seconds=0.5 if how == "drain timeout" else 30)
    (job_id,) = submit(settings, {"n": 5, "wait_for": str(tmp_path / "never")})
    wait_until(lambda: job(client, settings, job_id).state == "running", what="the job to start")

    worker.send_signal(signal.SIGTERM)
    if how == "second signal":
        time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)

    assert worker.wait(10) == (-signal.SIGTERM if how == "second signal" else 1)
    # Not acknowledged: another worker takes it over after the claim idle time.
    assert job(client, settings, job_id).state == "running"
    assert read_stats(client, settings.queue_name).running == 1


def test_the_heartbeat_is_touched_once_joined_and_while_waiting(settings, client, start_worker, tmp_path):
    beat = tmp_path / "worker.heartbeat"
    check = [sys.executable, "-m", "mlpatterns.healthcheck", "heartbeat"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HEARTBEAT_PATH": str(beat), "HEARTBEAT_MAX_AGE_SECONDS": "1"}
    assert subprocess.run(check, env=environment, cwd=ROOT).returncode == 1  # no worker yet
    worker = start_worker("w1", heartbeat_path=beat)
    wait_for_consumers(client, settings, "w1")
    wait_until(beat.exists, what="the first heartbeat")
    first = beat.stat().st_mtime
    wait_until(lambda: beat.stat().st_mtime > first, what="a heartbeat after a wait for a job (BLOCK_MS 100)")
    assert subprocess.run(check, env=environment, cwd=ROOT).returncode == 0

    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    time.sleep(1.2)  # past HEARTBEAT_MAX_AGE_SECONDS
    assert subprocess.run(check, env=environment, cwd=ROOT).returncode == 1


def test_live_workers_are_counted_in_redis_and_a_drained_one_leaves(settings, client, start_worker):
    async def live() -> list[str]:
        queue = JobQueue.from_settings(settings, expose_metrics=False)
        try:
            return await queue.live_workers(60)
        finally:
            await queue.close()

    first, _ = start_worker("w1"), start_worker("w2")
    wait_until(lambda: asyncio.run(live()) == ["w1", "w2"], what="both workers' first beat")
    first.send_signal(signal.SIGTERM)
    assert first.wait(10) == 0
    assert asyncio.run(live()) == ["w2"]  # at once, not a minute later


def test_a_batch_worker_takes_the_waiting_jobs_together_and_a_bad_one_fails_alone(settings, client, start_worker):
    payloads = [{"n": n, "fail": n == 5, "unstorable": n == 8} for n in range(10)]
    ids = submit(settings, *payloads)  # waiting before the worker starts: it reads them 4 at a time
    start_worker("batcher", batch_max_jobs=4)
    wait_until(lambda: read_stats(client, settings.queue_name).length == 0, what="10 jobs finished")

    jobs = [job(client, settings, job_id) for job_id in ids]
    assert [j.state for j in jobs] == ["failed" if n in (5, 8) else "done" for n in range(10)]
    assert [j.result["double"] for j in jobs if j.state == "done"] == [2 * n for n in range(10) if n not in (5, 8)]
    assert jobs[5].error == "ValueError: cannot double 5"
    assert jobs[8].error.startswith("TypeError")  # its result could not be stored
    assert client.lrange(f"test-batches:{settings.queue_name}", 0, -1) == [b"4", b"4", b"2"]


def test_a_batch_whose_call_raises_is_run_job_by_job(settings, client, start_worker):
    ids = submit(settings, {"n": 1}, {"n": 2, "fail_batch": True}, {"n": 3, "fail": True})
    start_worker("batcher", batch_max_jobs=8)
    wait_until(lambda: read_stats(client, settings.queue_name).length == 0, what="3 jobs finished")

    jobs = [job(client, settings, job_id) for job_id in ids]
    assert [j.state for j in jobs] == ["done", "done", "failed"]  # each alone: only the job that fails alone fails
    assert [jobs[0].result["double"], jobs[1].result["double"]] == [2, 4]
    assert jobs[2].error == "ValueError: cannot double 3"
    assert client.lrange(f"test-batches:{settings.queue_name}", 0, -1) == [b"3"]
    assert [runs(client, job_id) for job_id in ids] == [1, 1, 1]
