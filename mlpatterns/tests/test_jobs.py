"""The job queue against a real redis-server, in one process: states, reclaiming, exactly once, TTLs, metrics, 503.

Worker processes (killed, stopped, several at once) are in test_worker.py.
"""

import asyncio
import itertools
import time

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from mlpatterns import metrics
from mlpatterns.jobs import Job, JobConsumer, JobQueue, QueueCollector, QueueSettings, read_stats
from mlpatterns.redis_store import sync_client
from mlpatterns.runner.backing import RedisServer, free_port
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import HttpServiceSettings

_names = itertools.count()


@pytest.fixture
def settings(redis_url) -> QueueSettings:
    """A queue of its own for each test."""
    return QueueSettings(redis_url=redis_url, queue_name=f"test-jobs-{next(_names)}")


def submit(settings: QueueSettings, *payloads, request_id=None) -> list[str]:
    async def run():
        queue = JobQueue.from_settings(settings, expose_metrics=False)
        ids = [await queue.submit(payload, request_id=request_id) for payload in payloads]
        await queue.close()
        return ids

    return asyncio.run(run())


def get(settings: QueueSettings, job_id: str, with_payload: bool = False) -> Job | None:
    async def run():
        queue = JobQueue.from_settings(settings, expose_metrics=False)
        job = await queue.get(job_id, with_payload=with_payload)
        await queue.close()
        return job

    return asyncio.run(run())


def consumer(settings: QueueSettings, name: str, **options) -> JobConsumer:
    options.setdefault("result_ttl_seconds", settings.result_ttl_seconds)
    return JobConsumer(sync_client(settings, extra_read_seconds=1), settings.queue_name, name, **options)


def test_a_submitted_job_is_pending_at_once(settings):
    (job_id,) = submit(settings, {"items": [[5.1, 3.5, 1.4, 0.2]]}, request_id="req-1")

    job = get(settings, job_id)

    assert len(job_id) == 36  # a whole uuid4, not 6 characters of one
    assert (job.state, job.request_id, job.attempts, job.payload) == ("pending", "req-1", 0, None)
    assert get(settings, job_id, with_payload=True).payload == {"items": [[5.1, 3.5, 1.4, 0.2]]}
    assert get(settings, "00000000-0000-0000-0000-000000000000") is None


def test_a_taken_job_runs_and_is_finished_once(settings):
    (job_id,) = submit(settings, {"n": 2})
    worker = consumer(settings, "w1")

    job = worker.take(block_ms=100)
    running = get(settings, job_id)
    stored = worker.finish(job, {"double": 4})
    stored_again = worker.finish(job, {"double": 5})

    assert (job.id, job.payload, job.attempts) == (job_id, {"n": 2}, 1)
    assert (running.state, running.worker) == ("running", "w1")
    assert (stored, stored_again) == (True, False)
    done = get(settings, job_id)
    assert (done.state, done.result, done.error) == ("done", {"double": 4}, None)
    assert done.submitted_at <= done.started_at <= done.finished_at
    stats = read_stats(worker.redis, settings.queue_name)
    assert (stats.length, stats.submitted, stats.done) == (0, 1, 1)  # the stream keeps unfinished jobs only
    assert worker.take(block_ms=50) is None


def test_bytes_go_in_and_come_out_as_they_are(settings):
    (job_id,) = submit(settings, b"\x89PNG...")
    worker = consumer(settings, "w1")
    job = worker.take(block_ms=100)
    worker.finish(job, b"\x00\x01")
    assert job.payload == b"\x89PNG..."
    assert get(settings, job_id).result == b"\x00\x01"


def test_a_failed_job_keeps_its_reason(settings):
    (job_id,) = submit(settings, {"n": 1})
    worker = consumer(settings, "w1")
    worker.fail(worker.take(block_ms=100), "ValueError: bad input")
    job = get(settings, job_id)
    assert (job.state, job.error, job.result) == ("failed", "ValueError: bad input", None)


def test_a_silent_workers_job_is_reclaimed_and_stored_once(settings):
    (job_id,) = submit(settings, {"n": 3})
    first, second = consumer(settings, "w1", claim_idle_seconds=0.5), consumer(settings, "w2", claim_idle_seconds=0.5)
    taken = first.take(block_ms=100)
    assert second.take(block_ms=50) is None  # not idle long enough yet

    time.sleep(0.6)
    retaken = second.take(block_ms=100)

    assert (retaken.id, retaken.attempts, get(settings, job_id).worker) == (job_id, 2, "w2")
    assert second.finish(retaken, {"by": "w2"}) is True
    assert first.finish(taken, {"by": "w1"}) is False  # the stale worker comes back too late
    assert get(settings, job_id).result == {"by": "w2"}
    assert read_stats(first.redis, settings.queue_name).done == 1


def test_a_busy_worker_keeps_its_job(settings):
    submit(settings, {"n": 4})
    busy, idle = consumer(settings, "w1", claim_idle_seconds=0.5), consumer(settings, "w2", claim_idle_seconds=0.5)
    job = busy.take(block_ms=100)
    with busy.kept_claimed(job):
        deadline = time.monotonic() + 1.5  # three times the claim idle time
        while time.monotonic() < deadline:
            assert idle.take(block_ms=50) is None
    assert busy.finish(job, 8) is True


def test_a_job_that_keeps_killing_workers_is_given_up(settings):
    (job_id,) = submit(settings, {"n": 5})
    workers = [consumer(settings, f"w{i}", claim_idle_seconds=0.1, max_deliveries=2) for i in range(3)]
    assert workers[0].take(block_ms=100).attempts == 1  # ... and w0 dies
    time.sleep(0.15)
    assert workers[1].take(block_ms=100).attempts == 2  # ... and w1 dies
    time.sleep(0.15)
    assert workers[2].take(block_ms=100) is None

    job = get(settings, job_id)
    assert (job.state, job.error) == ("failed", "gave up after 2 attempts: each ended without an answer (worker died?)")
    assert read_stats(workers[2].redis, settings.queue_name).length == 0


def test_finished_jobs_expire_after_the_result_ttl(settings):
    settings = settings.model_copy(update={"result_ttl_seconds": 0.3})
    (job_id,) = submit(settings, {"n": 6})
    worker = consumer(settings, "w1")
    worker.finish(worker.take(block_ms=100), 12)
    assert get(settings, job_id).state == "done"
    time.sleep(0.45)
    assert get(settings, job_id) is None


def test_a_job_nobody_takes_expires_after_the_pending_ttl(settings):
    settings = settings.model_copy(update={"pending_ttl_seconds": 0.2})
    (job_id,) = submit(settings, {"n": 7})
    time.sleep(0.3)
    worker = consumer(settings, "w1")
    assert get(settings, job_id) is None
    assert worker.take(block_ms=100) is None  # its stream entry is settled, not run
    assert read_stats(worker.redis, settings.queue_name).length == 0


def test_queue_figures_on_metrics_come_from_redis(settings):
    submit(settings, {"n": 1}, {"n": 2}, {"n": 3})
    worker = consumer(settings, "w1")
    worker.finish(worker.take(block_ms=100), 2)
    worker.take(block_ms=100)  # running
    metrics.register_collector("test-queue", QueueCollector(sync_client(settings), settings.queue_name))

    text = metrics.exposition().decode()

    queue = f'queue="{settings.queue_name}"'
    for line in (
        f"job_queue_up{{{queue}}} 1.0",
        f"job_queue_length{{{queue}}} 2.0",
        f'job_queue_jobs{{{queue},state="pending"}} 1.0',
        f'job_queue_jobs{{{queue},state="running"}} 1.0',
        f"job_queue_submitted_total{{{queue}}} 3.0",
        f'job_queue_finished_total{{{queue},state="done"}} 1.0',
    ):
        assert line in text


def test_queue_figures_say_redis_is_down_instead_of_failing_the_scrape():
    server = RedisServer(free_port()).start()
    server.stop()
    collector = QueueCollector(sync_client(QueueSettings(redis_url=server.url)), "q")
    families = list(collector.collect())
    assert [(f.name, f.samples[0].value) for f in families] == [("job_queue_up", 0.0)]


def api(settings: QueueSettings):
    """The asynchronous pattern's API, in small: submit and read."""
    queue = JobQueue.from_settings(settings)

    def routes(router: APIRouter) -> None:
        @router.post("/predict")
        async def predict(body: dict):
            return {"job_id": await queue.submit(body)}

        @router.get("/job/{job_id}")
        async def job(job_id: str):
            found = await queue.get(job_id)
            return {"state": found.state} if found else {"state": None}

    return create_service_app(HttpServiceSettings(), routes)


def test_an_app_submits_and_shows_the_queue_on_its_metrics(settings):
    with TestClient(api(settings)) as client:
        job_id = client.post("/predict", json={"n": 1}).json()["job_id"]
        state = client.get(f"/job/{job_id}").json()
        text = client.get("/metrics").text
    assert state == {"state": "pending"}
    assert f'job_queue_jobs{{queue="{settings.queue_name}",state="pending"}} 1.0' in text


def test_an_app_answers_503_while_redis_is_down():
    server = RedisServer(free_port()).start()
    settings = QueueSettings(redis_url=server.url, queue_name="down", redis_timeout_seconds=0.5)
    server.stop()
    with TestClient(api(settings)) as client:
        responses = [client.post("/predict", json={"n": 1}), client.get("/job/x")]
        scrape = client.get("/metrics")
    for response in responses:
        assert response.status_code == 503
        assert response.json() == {"detail": "redis is unavailable; try again later"}
    assert scrape.status_code == 200 and 'job_queue_up{queue="down"} 0.0' in scrape.text


def live_workers(settings: QueueSettings, silent_seconds: float) -> list[str]:
    async def run():
        queue = JobQueue.from_settings(settings, expose_metrics=False)
        try:
            return await queue.live_workers(silent_seconds)
        finally:
            await queue.close()

    return asyncio.run(run())


def test_live_workers_are_those_that_beat_lately_by_redis_clock(settings):
    assert live_workers(settings, 60) == []  # no worker ever
    first, second = consumer(settings, "w1"), consumer(settings, "w2")
    first.beat()
    second.beat()
    assert live_workers(settings, 60) == ["w1", "w2"]
    client = sync_client(settings)
    now, _ = client.time()
    client.zadd(f"{settings.queue_name}:workers", {"w1": now - 30})  # as if w1's last beat were 30 s ago
    assert live_workers(settings, 10) == ["w2"]
    second.leave()
    assert live_workers(settings, 60) == ["w1"]
    client.zadd(f"{settings.queue_name}:workers", {"gone": now - 90_000})  # silent for over a day
    first.beat()  # a beat drops the workers silent that long
    assert client.zrange(f"{settings.queue_name}:workers", 0, -1) == [b"w1"]
