"""Measuring a job queue from its own records, for the benches of the patterns that queue jobs.

    wait_drained(client, "jobs")                      # until every submitted job is finished (the queue's counters)
    jobs = records_since(client, "jobs", since)       # every record submitted at or after `since` (Unix time)
    figures(jobs, "7")                                # jobs/s, queue wait, work and time to done; wrong answers

Every figure comes from the timestamps the queue writes into each record (submitted, started, finished), so a
bench needs no clock of its own around the jobs: jobs/s is the number of jobs over the time from the first
submission to the last result; queue wait is a worker's start minus the submission; work is the result minus
the start; time to done is the result minus the submission.
"""

import asyncio
import time

import numpy as np
import redis

from mlpatterns.jobs import Job, JobQueue, Keys, QueueSettings, read_stats


def wait_drained(client: redis.Redis, queue: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while (stats := read_stats(client, queue)).done + stats.failed < stats.submitted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the queue did not drain within {timeout:.0f} s: {stats}")
        time.sleep(0.05)


def records_since(client: redis.Redis, queue: str, since: float) -> list[Job]:
    """Every job record submitted at or after `since` (Unix time)."""
    keys = list(client.scan_iter(Keys(queue).job("*"), count=1000))
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        raw = pipe.execute()
    jobs = [Job.from_record(key.decode().rsplit(":", 1)[1], record) for key, record in zip(keys, raw, strict=True)]
    return [job for job in jobs if job.submitted_at is not None and job.submitted_at >= since]


def figures(jobs: list[Job], labels: dict[str, str] | str) -> dict:
    """The figures of finished jobs; `wrong` counts those not done with their label (`labels`: one for all, or
    by job id)."""
    wrong = [
        j
        for j in jobs
        if j.state != "done" or j.result["prediction"] != (labels if isinstance(labels, str) else labels[j.id])
    ]
    submitted = np.array([j.submitted_at for j in jobs])
    started = np.array([j.started_at for j in jobs])
    done = np.array([j.finished_at for j in jobs])
    wait, work, to_done = started - submitted, done - started, done - submitted
    return {
        "jobs": len(jobs),
        "wrong": len(wrong),
        "jobs_per_s": len(jobs) / (done.max() - submitted.min()),
        "wait_p50_ms": 1000 * float(np.percentile(wait, 50)),
        "wait_p99_ms": 1000 * float(np.percentile(wait, 99)),
        "work_p50_ms": 1000 * float(np.percentile(work, 50)),
        "done_p50_ms": 1000 * float(np.percentile(to_done, 50)),
        "done_p99_ms": 1000 * float(np.percentile(to_done, 99)),
    }


def enqueue(settings: QueueSettings, payloads: list[bytes | dict]) -> list[str]:
    """Submit the payloads straight to the queue, 32 at a time, faster than workers take them: a backlog."""

    async def submit_all() -> list[str]:
        queue = JobQueue.from_settings(settings, expose_metrics=False)
        try:
            ids = []
            for start in range(0, len(payloads), 32):  # 32 submissions in flight on the connection pool
                ids += await asyncio.gather(*(queue.submit(p) for p in payloads[start : start + 32]))
            return ids
        finally:
            await queue.close()

    return asyncio.run(submit_all())
