"""A reliable job queue on Redis Streams: no job lost when a worker dies mid-job, each job finished once.

The API side is async (a FastAPI route must not block the event loop):

    queue = JobQueue.from_settings(QueueSettings())  # also puts the queue's figures on this process's /metrics
    job_id = await queue.submit({"items": [[5.1, 3.5, 1.4, 0.2]]}, request_id=request_id.get())
    job = await queue.get(job_id)  # None if unknown or expired; else job.state, job.result, job.error

The worker side is sync (a model call is sync); `mlpatterns.worker.run_worker` wraps it with signals, logging
and metrics:

    consumer = JobConsumer(sync_client(settings, 1.0), "jobs", "host-123", claim_idle_seconds=30)
    job = consumer.take(block_ms=1000)  # a stale job reclaimed from a dead worker first, else a new one
    with consumer.kept_claimed(job):
        result = handler(job)
    consumer.finish(job, result)  # or consumer.fail(job, "ValueError: ...")

How it holds (Redis 6.2+):
- `submit` writes the job's record and adds it to the stream in one MULTI, before the id is returned;
- workers read through one consumer group (XREADGROUP): an entry stays in the group's pending list until it is
  acknowledged, so a worker that dies leaves its job there, and once that entry has been idle for
  `claim_idle_seconds` another worker takes it over (XAUTOCLAIM). A worker busy with a long job keeps renewing
  its claim (XCLAIM JUSTID every third of that time), so only dead or stuck workers lose their jobs;
- finishing is one Lua script: the result is stored only while the record is still pending or running (a job
  that a stuck worker and its successor both ran is finished once), then the entry is acknowledged and deleted
  (XACK + XDEL), so the stream holds unfinished jobs only and does not grow;
- a job taken more than `max_deliveries` times (it kills every worker that runs it) is failed: "gave up ...";
- records expire `pending_ttl_seconds` after submission and `result_ttl_seconds` after finishing;
- live workers say so (`JobConsumer.beat`, at least every second while they wait and after every job), so an
  API can tell whether anyone is there to do its jobs (`JobQueue.live_workers`); a worker that stops beating for
  a day is dropped from the set, one that drains leaves it at once.

Key scheme, all under the queue's name (QUEUE_NAME, default `jobs`):

    <queue>:stream      stream, one entry {id: <job id>} per unfinished job; consumer group `workers`
    <queue>:job:<id>    hash: state, payload, payload_type, submitted, request_id, attempts, worker, started,
                        finished, result, result_type, error
    <queue>:counts      hash: submitted, done, failed (since the queue began)
    <queue>:workers     sorted set: each worker's name, scored by when it last said it is alive (Redis's clock)

Payloads and results are JSON (orjson) or bytes kept as they are; `*_type` says which. On a Redis Cluster, name
the queue with a hash tag (`{jobs}`) so that its keys share a node, as the scripts need.

Metrics: the API's `/metrics` reads the queue from Redis at scrape time (`QueueCollector`), so the figures are
right whichever API process answers and however many workers and replicas run: `job_queue_length`,
`job_queue_jobs{state="pending"|"running"}`, `job_queue_submitted_total`, `job_queue_finished_total{state}`,
`job_queue_up`. Workers count what they did: `worker_jobs_total{outcome}`, `worker_jobs_reclaimed_total`.
"""

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import redis.asyncio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import Field

from mlpatterns import metrics
from mlpatterns.redis_store import RedisSettings, async_client, sync_client

logger = logging.getLogger(__name__)

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
GROUP = "workers"

WORKER_JOBS = metrics.counter(
    "worker_jobs_total",
    "Jobs a worker took, by how they ended: done, failed, gave_up, already_finished (by another), expired",
    ["queue", "outcome"],
)
_OUTCOMES = ("done", "failed", "gave_up", "already_finished", "expired")
RECLAIMED = metrics.counter("worker_jobs_reclaimed_total", "Jobs taken over from a dead or stuck worker", ["queue"])


class QueueSettings(RedisSettings):
    """The queue as both sides see it: the API submits and reads, workers take and finish."""

    queue_name: str = Field("jobs", description="Prefix of the queue's Redis keys (see mlpatterns.jobs).")
    result_ttl_seconds: float = Field(3600, gt=0, description="How long a finished job's record and result stay.")
    pending_ttl_seconds: float = Field(
        86_400, gt=0, description="How long a job may wait for a worker before its record expires."
    )


def failure_reason(error: Exception) -> str:
    """What a failed job's record says: `"<ExceptionType>: <message>"`."""
    return f"{type(error).__name__}: {error}"


def encode(value: Any) -> tuple[bytes, str]:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), "bytes"
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY), "json"


def decode(data: bytes | None, kind: str | None) -> Any:
    if data is None:
        return None
    return data if kind == "bytes" else orjson.loads(data)


@dataclass(frozen=True)
class Keys:
    queue: str

    @property
    def stream(self) -> str:
        return f"{self.queue}:stream"

    @property
    def counts(self) -> str:
        return f"{self.queue}:counts"

    @property
    def workers(self) -> str:
        return f"{self.queue}:workers"

    def job(self, job_id: str) -> str:
        return f"{self.queue}:job:{job_id}"


@dataclass(frozen=True)
class Job:
    id: str
    state: str  # pending, running, done, failed
    payload: Any = None
    result: Any = None
    error: str | None = None  # why it failed
    request_id: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None  # the last worker that took it
    attempts: int = 0  # how many times a worker took it
    entry_id: str | None = field(default=None, repr=False)  # its stream entry, on the worker side

    @classmethod
    def from_record(cls, job_id: str, record: dict[bytes, bytes | None], entry_id: str | None = None) -> "Job":
        fields = {name.decode(): value for name, value in record.items() if value is not None}

        def text(name: str) -> str | None:
            return fields[name].decode() if name in fields else None

        def seconds(name: str) -> float | None:
            return float(fields[name]) if name in fields else None

        return cls(
            id=job_id,
            state=text("state") or "",
            payload=decode(fields.get("payload"), text("payload_type")),
            result=decode(fields.get("result"), text("result_type")),
            error=text("error"),
            request_id=text("request_id"),
            submitted_at=seconds("submitted"),
            started_at=seconds("started"),
            finished_at=seconds("finished"),
            worker=text("worker"),
            attempts=int(fields.get("attempts", 0)),
            entry_id=entry_id,
        )


class JobQueue:
    """The API side: submit jobs and read their state. Async; one per process."""

    # What `get` reads: everything but the payload, which may be large and the API does not echo back.
    _FIELDS = tuple("state result result_type error request_id submitted started finished worker attempts".split())

    def __init__(self, client: redis.asyncio.Redis, name: str = "jobs", *, pending_ttl_seconds: float = 86_400):
        self.redis = client
        self.keys = Keys(name)
        self.pending_ttl_ms = int(pending_ttl_seconds * 1000)

    @classmethod
    def from_settings(cls, settings: QueueSettings, expose_metrics: bool = True) -> "JobQueue":
        """With `expose_metrics`, this process's `/metrics` shows the queue's figures, read from Redis."""
        if expose_metrics:
            metrics.register_collector(
                f"job_queue:{settings.queue_name}", QueueCollector(sync_client(settings), settings.queue_name)
            )
        return cls(async_client(settings), settings.queue_name, pending_ttl_seconds=settings.pending_ttl_seconds)

    async def submit(self, payload: Any, *, request_id: str | None = None) -> str:
        """Store the job and queue it; once this returns, `get` finds the job (pending)."""
        job_id = str(uuid.uuid4())
        data, kind = encode(payload)
        record = {"state": PENDING, "payload": data, "payload_type": kind, "submitted": time.time()}
        if request_id:
            record["request_id"] = request_id
        key = self.keys.job(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=record)
            pipe.pexpire(key, self.pending_ttl_ms)
            pipe.xadd(self.keys.stream, {"id": job_id})
            pipe.hincrby(self.keys.counts, "submitted", 1)
            await pipe.execute()
        return job_id

    async def get(self, job_id: str, *, with_payload: bool = False) -> Job | None:
        """The job's state (and result or reason), or None if no such job exists or its record expired."""
        names = self._FIELDS + (("payload", "payload_type") if with_payload else ())
        values = await self.redis.hmget(self.keys.job(job_id), names)
        if values[0] is None:
            return None
        return Job.from_record(job_id, {name.encode(): value for name, value in zip(names, values, strict=True)})

    async def live_workers(self, silent_seconds: float) -> list[str]:
        """The workers that said they were alive (`JobConsumer.beat`) in the last `silent_seconds`, by Redis's
        clock (the workers' and the API's hosts may disagree)."""
        seconds, _ = await self.redis.time()
        names = await self.redis.zrangebyscore(self.keys.workers, seconds - silent_seconds, "+inf")
        return sorted(name.decode() for name in names)

    async def close(self) -> None:
        await self.redis.aclose()


# KEYS: record. ARGV: worker, now. A job still to do becomes running (one more attempt); returns the record.
_START = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'pending' or state == 'running' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1], 'started', ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: record, stream, counts. ARGV: group, entry id, ttl ms, new state, then field/value pairs.
# Stores the outcome only if nobody has finished the job yet; acknowledges and deletes the entry either way.
_FINISH = """
local stored = 0
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'pending' or state == 'running' then
  redis.call('HSET', KEYS[1], 'state', ARGV[4], unpack(ARGV, 5))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
  stored = 1
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
return stored
"""


# KEYS: workers. ARGV: worker, forget after (s). Scored by Redis's clock; drops workers silent that long.
_BEAT = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
"""
FORGET_WORKER_SECONDS = 86_400


class JobConsumer:
    """The worker side: take a job, keep it while working, finish or fail it. Sync; one per worker process.

    The client's read timeout must exceed the `block_ms` given to `take` (`sync_client(settings, block_seconds)`).
    """

    def __init__(
        self,
        client: redis.Redis,
        queue: str,
        name: str,
        *,
        claim_idle_seconds: float = 30.0,
        max_deliveries: int = 3,
        result_ttl_seconds: float = 3600,
    ):
        self.redis = client
        self.keys = Keys(queue)
        self.name = name
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self.max_deliveries = max_deliveries
        self.result_ttl_ms = int(result_ttl_seconds * 1000)
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._beat = client.register_script(_BEAT)
        self._outcomes = {outcome: WORKER_JOBS.labels(queue, outcome) for outcome in _OUTCOMES}
        self._cursor: bytes | str = "0-0"

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing. From id 0: jobs submitted before any worker
        started are delivered too."""
        try:
            self.redis.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def join(self) -> None:
        """Create the group if missing and enter this worker in it, so XINFO CONSUMERS lists it before its first job."""
        self.ensure_group()
        self.redis.xgroup_createconsumer(self.keys.stream, GROUP, self.name)

    def beat(self) -> None:
        """Say this worker is alive (for `JobQueue.live_workers`)."""
        self._beat(keys=[self.keys.workers], args=[self.name, FORGET_WORKER_SECONDS])

    def leave(self) -> None:
        """Say this worker is gone (a drain): it no longer counts as alive."""
        self.redis.zrem(self.keys.workers, self.name)

    def take(self, block_ms: int = 1000) -> Job | None:
        """The next job to work on, now running under this worker's name; None if none came within `block_ms`.
        Jobs found finished, expired or given up on are settled here and not returned."""
        jobs = self.take_many(1, block_ms)
        return jobs[0] if jobs else None

    def take_many(self, count: int, block_ms: int = 1000) -> list[Job]:
        """Up to `count` jobs, each as `take` gives one: a job reclaimed from a dead worker, else as many new ones as
        are waiting, up to `count` (one XREADGROUP COUNT), waiting `block_ms` only while there is none."""
        try:
            reclaimed = self._reclaim()
            entries = [reclaimed] if reclaimed else self._read(count, block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()  # the first worker ever, or the stream was deleted (FLUSHDB, a new Redis)
            entries = self._read(count, block_ms)
        if len(entries) == 1:
            raws = [self._start(keys=[self.keys.job(entries[0][1])], args=[self.name, time.time()])]
        else:  # one round trip for them all
            with self.redis.pipeline(transaction=False) as pipe:
                for _, job_id in entries:
                    self._start(keys=[self.keys.job(job_id)], args=[self.name, time.time()], client=pipe)
                raws = pipe.execute()
        started = (self._begin(entry_id, job_id, raw) for (entry_id, job_id), raw in zip(entries, raws, strict=True))
        return [job for job in started if job is not None]

    def _begin(self, entry_id: str, job_id: str, raw: list) -> Job | None:
        """A delivered job as _START left it: the Job to run, or None (settled here) if it is not to be run."""
        if not raw:
            logger.warning("job %s expired before a worker took it", job_id)
            self._settle(entry_id, "expired")
            return None
        job = Job.from_record(job_id, dict(zip(raw[::2], raw[1::2], strict=True)), entry_id)
        if job.state in (DONE, FAILED):
            self._settle(entry_id, "already_finished")  # its worker died between storing and acknowledging
            return None
        if job.attempts > self.max_deliveries:
            reason = f"gave up after {self.max_deliveries} attempts: each ended without an answer (worker died?)"
            logger.error("job %s: %s", job_id, reason)
            self._end(job, FAILED, {"error": reason}, "gave_up")
            return None
        return job

    def _reclaim(self) -> tuple[str, str] | None:
        # XAUTOCLAIM looks at a few pending entries per call: go on from where the last call stopped (it answers
        # 0-0 when it has been through them all), so a stale entry behind many busy ones is found too.
        reply = self.redis.xautoclaim(self.keys.stream, GROUP, self.name, self.claim_idle_ms, self._cursor, count=1)
        self._cursor = reply[0]
        for entry_id, fields in reply[1]:
            if fields:  # an entry deleted meanwhile comes back without its fields
                RECLAIMED.labels(self.keys.queue).inc()
                logger.warning(
                    "reclaimed job %s from a worker silent for %d ms", fields[b"id"].decode(), self.claim_idle_ms
                )
                return entry_id.decode(), fields[b"id"].decode()
        return None

    def _read(self, count: int, block_ms: int) -> list[tuple[str, str]]:
        reply = self.redis.xreadgroup(GROUP, self.name, {self.keys.stream: ">"}, count=count, block=block_ms)
        if not reply:
            return []
        return [(entry_id.decode(), fields[b"id"].decode()) for entry_id, fields in reply[0][1]]

    @contextmanager
    def kept_claimed(self, *jobs: Job) -> Iterator[None]:
        """While the block runs, renew this worker's claim on the jobs so no other worker takes them over."""
        stop = threading.Event()
        entry_ids = [job.entry_id for job in jobs]
        named = jobs[0].id + (f" and {len(jobs) - 1} more" if len(jobs) > 1 else "")

        def renew() -> None:
            while not stop.wait(self.claim_idle_ms / 3000):
                try:
                    self.redis.xclaim(self.keys.stream, GROUP, self.name, 0, entry_ids, justid=True)
                except redis.RedisError as exc:
                    logger.warning("job %s: could not renew the claim: %s", named, exc)

        thread = threading.Thread(target=renew, name=f"claim-{jobs[0].id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def finish(self, job: Job, result: Any) -> bool:
        """Store the result; False if the job had been finished already (it is then left as it was).
        Raises TypeError for a result that is neither bytes nor JSON-serialisable."""
        data, kind = encode(result)
        return self._end(job, DONE, {"result": data, "result_type": kind}, "done")

    def fail(self, job: Job, reason: str) -> bool:
        return self._end(job, FAILED, {"error": reason}, "failed")

    def end_many(self, outcomes: list[tuple[Job, Any]]) -> list[str]:
        """Finish each job with its result, or fail it with the exception given in its place (`failure_reason`; a
        result that cannot be stored fails its job too), all in one round trip: the state each job ended in."""
        ends = []
        for job, outcome in outcomes:
            if not isinstance(outcome, Exception):
                try:
                    data, kind = encode(outcome)
                except TypeError as exc:
                    outcome = exc
                else:
                    ends.append((job, DONE, {"result": data, "result_type": kind}))
                    continue
            ends.append((job, FAILED, {"error": failure_reason(outcome)}))
        with self.redis.pipeline(transaction=False) as pipe:
            for job, state, fields in ends:
                self._end(job, state, fields, client=pipe)
            stored = pipe.execute()
        for (_, state, _), was_stored in zip(ends, stored, strict=True):
            self._outcomes[state if was_stored else "already_finished"].inc()
        return [state for _, state, _ in ends]

    def _end(self, job: Job, state: str, fields: dict[str, Any], outcome: str = "", client=None) -> bool:
        """Store the job's end (`outcome` counts it); with a pipeline as `client`, only queue the call on it."""
        pairs = [item for name_value in fields.items() for item in name_value]
        stored = self._finish(
            keys=[self.keys.job(job.id), self.keys.stream, self.keys.counts],
            args=[GROUP, job.entry_id, self.result_ttl_ms, state, "finished", time.time(), *pairs],
            client=client,
        )
        if client is None:
            self._outcomes[outcome if stored else "already_finished"].inc()
        return bool(stored)

    def _settle(self, entry_id: str, outcome: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.stream, GROUP, entry_id)
            pipe.xdel(self.keys.stream, entry_id)
            pipe.execute()
        self._outcomes[outcome].inc()


@dataclass(frozen=True)
class QueueStats:
    length: int  # entries in the stream: jobs not finished yet
    running: int  # delivered to a worker and not acknowledged (including a dead worker's, until reclaimed)
    submitted: int
    done: int
    failed: int

    @property
    def pending(self) -> int:
        return max(self.length - self.running, 0)


def read_stats(client: redis.Redis, queue: str) -> QueueStats:
    keys = Keys(queue)
    with client.pipeline(transaction=True) as pipe:
        pipe.xlen(keys.stream)
        pipe.xpending(keys.stream, GROUP)
        pipe.hgetall(keys.counts)
        length, in_flight, counts = pipe.execute(raise_on_error=False)
    if isinstance(length, Exception):
        raise length
    running = in_flight["pending"] if isinstance(in_flight, dict) else 0  # no group yet: no worker ever started
    counts = {name.decode(): int(value) for name, value in counts.items()}
    return QueueStats(length, running, counts.get("submitted", 0), counts.get(DONE, 0), counts.get(FAILED, 0))


class QueueCollector:
    """Prometheus collector reading one queue's figures from Redis at each scrape (in FastAPI's thread pool, as
    `/metrics` is a sync route). With Redis down it reports `job_queue_up 0` instead of failing the scrape."""

    def __init__(self, client: redis.Redis, queue: str):
        self.redis = client
        self.queue = queue

    def describe(self):
        return []  # nothing to check at registration: the figures exist only once Redis is read

    def collect(self):
        labels = [self.queue]
        up = GaugeMetricFamily("job_queue_up", "1 if Redis answered this scrape", labels=["queue"])
        try:
            stats = read_stats(self.redis, self.queue)
        except redis.RedisError as exc:
            logger.warning("queue %s: no figures for /metrics: %s", self.queue, exc)
            up.add_metric(labels, 0)
            yield up
            return
        up.add_metric(labels, 1)
        yield up
        length = GaugeMetricFamily("job_queue_length", "Jobs not finished yet (pending or running)", labels=["queue"])
        length.add_metric(labels, stats.length)
        yield length
        jobs = GaugeMetricFamily("job_queue_jobs", "Unfinished jobs by state", labels=["queue", "state"])
        jobs.add_metric([self.queue, PENDING], stats.pending)
        jobs.add_metric([self.queue, RUNNING], stats.running)
        yield jobs
        submitted = CounterMetricFamily("job_queue_submitted", "Jobs submitted", labels=["queue"])
        submitted.add_metric(labels, stats.submitted)
        yield submitted
        finished = CounterMetricFamily("job_queue_finished", "Jobs finished, by state", labels=["queue", "state"])
        finished.add_metric([self.queue, DONE], stats.done)
        finished.add_metric([self.queue, FAILED], stats.failed)
        yield finished
