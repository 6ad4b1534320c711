"""A queue worker process, the counterpart of `create_service_app`: `run_worker(settings, handler)`.

    def predict(job: Job) -> dict:                 # the pattern's handler: payload in, JSON (or bytes) out
        answer = plane.predict(job.payload["items"])
        return {"prediction": answer.scores.tolist(), "labels": answer.labels}

    if __name__ == "__main__":
        sys.exit(run_worker(WorkerSettings(), predict))

What it does around the handler:
- logging to stdout (`configure_logging`), with the job's request id (or its id) in `mlpatterns.logging.request_id`
  while the handler runs, so log lines and calls to other services carry it;
- jobs from `mlpatterns.jobs.JobConsumer`: a reclaimed job of a dead worker first, else the next new one;
- a handler exception fails that job with `"<ExceptionType>: <message>"` and the worker goes on;
- with a batch handler (`run_worker(settings, handler, batch_handler)`) and BATCH_MAX_JOBS > 1, the jobs waiting
  together (up to that many, read at once) go to one call of it, e.g. one model call for all; it answers a result
  or an exception per job, and should the call itself raise, each job is run alone by `handler`;
- Redis unreachable: a warning, a wait (growing to 5 s), and another try; no job is lost, as none was acknowledged;
- SIGTERM or SIGINT: finish the current job, then exit 0 (Kubernetes and compose send SIGTERM, then wait).
  A second signal, or `drain_timeout_seconds` without the job finishing, stops at once; the job stays unacknowledged
  and another worker takes it over after `claim_idle_seconds`;
- a heartbeat file (`heartbeat_path`, when set) touched once the worker has joined the queue and after every
  wait for a job and every job, so `python -m mlpatterns.healthcheck heartbeat` (a compose healthcheck, a
  Kubernetes exec probe) tells a live loop from a stuck or dead one without a port (local replicas have none);
  the same beat goes to Redis (`JobConsumer.beat`, at most once a second), so an API can count the live workers
  (`JobQueue.live_workers`); a worker that drains leaves the count at once;
- Prometheus metrics on `metrics_port` when it is set (0, the default, serves none, so local replicas don't
  clash): `worker_jobs_total{queue, outcome}`, `worker_job_duration_seconds{queue, outcome}`,
  `worker_jobs_reclaimed_total{queue}` and `worker_batch_jobs{queue}` (jobs per batch handler call). Queue depth
  and job states are on the API's `/metrics` (read from Redis).
"""

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from prometheus_client import start_http_server
from pydantic import Field

from mlpatterns import metrics
from mlpatterns.jobs import FAILED, Job, JobConsumer, QueueSettings, failure_reason
from mlpatterns.logging import configure_logging, request_id
from mlpatterns.redis_store import sync_client

logger = logging.getLogger(__name__)

JOB_SECONDS = metrics.histogram(
    "worker_job_duration_seconds", "Time the handler took per job, by outcome", ["queue", "outcome"]
)

Handler = Callable[[Job], Any]
# Several jobs in one call (one model call for all): a result or an exception per job, in the jobs' order.
BatchHandler = Callable[[list[Job]], list[Any]]
BATCH_JOBS = metrics.histogram(
    "worker_batch_jobs",
    "Jobs taken together and given to one call of the batch handler",
    ["queue"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
BEAT_EVERY_SECONDS = 1.0  # how often a worker says it is alive in Redis (JobConsumer.beat)


class WorkerSettings(QueueSettings):
    """A queue worker. Environment names in upper case (REDIS_URL, QUEUE_NAME, CLAIM_IDLE_SECONDS, ...)."""

    consumer_name: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="This worker's name in the consumer group and in job records (default: host-pid).",
    )
    claim_idle_seconds: float = Field(
        30.0, gt=0, description="A job whose worker has been silent this long is taken over by another worker."
    )
    block_ms: int = Field(1000, gt=0, description="How long one wait for a new job lasts (and a signal waits).")
    max_deliveries: int = Field(3, gt=0, description="A job taken this many times without an answer is failed.")
    drain_timeout_seconds: float = Field(
        30.0, gt=0, description="After SIGTERM, how long the current job may take before the worker stops at once."
    )
    metrics_port: int = Field(0, ge=0, description="Serve Prometheus metrics on this port; 0 serves none.")
    batch_max_jobs: int = Field(
        1,
        ge=1,
        description="Take up to this many waiting jobs at once and run them in one call of the worker's batch "
        "handler (one model call), when it has one; 1: a job at a time.",
    )
    heartbeat_path: Path | None = Field(
        None,
        description="A file touched after every wait for a job and every job (`python -m mlpatterns.healthcheck "
        "heartbeat` checks its age); none by default.",
    )
    log_level: str = "INFO"
    log_json: bool = Field(False, description="Log one JSON object per line instead of plain text.")


class _Drain:
    """The first SIGTERM/SIGINT asks the loop to stop after the current job; from then on the signals' default
    action applies, so a second one ends the process at once, as does the drain timeout."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.requested = threading.Event()

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame) -> None:
        logger.info("%s: finishing the current job, then stopping", signal.Signals(signum).name)
        for other in (signal.SIGTERM, signal.SIGINT):
            signal.signal(other, signal.SIG_DFL)
        self.requested.set()
        timer = threading.Timer(self.timeout, self._stop_now)
        timer.daemon = True
        timer.start()

    def _stop_now(self) -> None:
        logger.error("the current job did not finish within %.0f s of the stop signal: stopping now", self.timeout)
        logging.shutdown()
        os._exit(1)


def run_worker(settings: WorkerSettings, handler: Handler, batch_handler: BatchHandler | None = None) -> int:
    """Take jobs and run `handler` on each until SIGTERM/SIGINT; returns the exit code (0 after a drain).

    With a `batch_handler` and BATCH_MAX_JOBS > 1, the jobs waiting together (up to that many) go to one call of it;
    should that call raise, each of its jobs is run alone by `handler`, so only a job that fails alone fails."""
    batch = settings.batch_max_jobs if batch_handler is not None else 1
    configure_logging(settings.log_level, settings.log_json)
    consumer = JobConsumer(
        sync_client(settings, extra_read_seconds=settings.block_ms / 1000),
        settings.queue_name,
        settings.consumer_name,
        claim_idle_seconds=settings.claim_idle_seconds,
        max_deliveries=settings.max_deliveries,
        result_ttl_seconds=settings.result_ttl_seconds,
    )
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    drain = _Drain(settings.drain_timeout_seconds)
    drain.install()
    logger.info("worker %s takes jobs from queue %r", settings.consumer_name, settings.queue_name)
    failures, joined, beaten = 0, False, -BEAT_EVERY_SECONDS
    while not drain.requested.is_set():
        try:
            if not joined:
                consumer.join()
                joined = True
            _beat(settings.heartbeat_path)
            if time.monotonic() - beaten >= BEAT_EVERY_SECONDS:  # not after every job: a round trip each
                consumer.beat()
                beaten = time.monotonic()
            if batch > 1:
                jobs = consumer.take_many(batch, settings.block_ms)
                if jobs:
                    _run_jobs(consumer, handler, batch_handler, jobs)
            elif (job := consumer.take(settings.block_ms)) is not None:
                _run_job(consumer, handler, job)
            failures = 0
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            failures += 1
            wait = min(0.1 * 2**failures, 5.0)
            logger.warning("redis unavailable (%s); trying again in %.1f s", exc, wait)
            drain.requested.wait(wait)
    try:
        consumer.leave()
    except redis.RedisError as exc:  # it drops out of the live count once its last beat is old enough
        logger.warning("could not say the worker left: %s", exc)
    logger.info("worker %s stopped", settings.consumer_name)
    return 0


def _beat(path: Path | None) -> None:
    if path is not None:
        path.touch()


def _run_job(consumer: JobConsumer, handler: Handler, job: Job) -> None:
    start = time.perf_counter()
    token = request_id.set(job.request_id or job.id)  # in the handler's log lines and calls
    try:
        with consumer.kept_claimed(job):
            outcome = handler(job)
    except redis.RedisError:
        raise  # Redis trouble is not the job's fault: it stays unacknowledged and is taken again later
    except Exception as exc:
        outcome = exc
    finally:
        request_id.reset(token)
    _settle_job(consumer, job, outcome, time.perf_counter() - start)


def _run_jobs(consumer: JobConsumer, handler: Handler, batch_handler: BatchHandler, jobs: list[Job]) -> None:
    """The jobs taken together, in one call of the batch handler; each finished or failed as `_run_job` does."""
    BATCH_JOBS.labels(consumer.keys.queue).observe(len(jobs))
    start = time.perf_counter()
    try:
        with consumer.kept_claimed(*jobs):
            outcomes = batch_handler(jobs)
        if len(outcomes) != len(jobs):
            raise ValueError(f"the batch handler answered {len(outcomes)} outcomes for {len(jobs)} jobs")
    except redis.RedisError:
        raise  # as for one job: every job of the batch stays unacknowledged
    except Exception as exc:  # not the jobs' fault until one fails alone
        logger.warning("a batch of %d jobs failed (%s: %s); running each alone", len(jobs), type(exc).__name__, exc)
        for job in jobs:
            _run_job(consumer, handler, job)
        return
    seconds = time.perf_counter() - start  # each job waited for the whole call
    states = consumer.end_many(list(zip(jobs, outcomes, strict=True)))  # one round trip for them all
    for job, outcome, state in zip(jobs, outcomes, states, strict=True):
        token = request_id.set(job.request_id or job.id)
        if state == FAILED:
            reason = failure_reason(outcome) if isinstance(outcome, Exception) else "its result cannot be stored"
            logger.warning("job %s failed: %s", job.id, reason)
        else:
            logger.info("job %s done (attempt %d)", job.id, job.attempts)
        request_id.reset(token)
        JOB_SECONDS.labels(consumer.keys.queue, state).observe(seconds)


def _settle_job(consumer: JobConsumer, job: Job, outcome: Any, seconds: float) -> None:
    """Store the job's result, or fail it with the exception its handler raised (or returned, for a batch)."""
    token = request_id.set(job.request_id or job.id)
    try:
        if not isinstance(outcome, Exception):
            try:
                consumer.finish(job, outcome)  # TypeError for a result it cannot store: that fails the job too
            except redis.RedisError:
                raise
            except Exception as exc:
                outcome = exc
        if isinstance(outcome, Exception):
            reason = failure_reason(outcome)
            logger.warning("job %s failed: %s", job.id, reason, exc_info=outcome)
            consumer.fail(job, reason)
            state = FAILED
        else:
            logger.info("job %s done (attempt %d)", job.id, job.attempts)
            state = "done"
    finally:
        request_id.reset(token)
    JOB_SECONDS.labels(consumer.keys.queue, state).observe(seconds)
