"""A tiny worker for test_worker.py: `python -m mlpatterns.tests.doubling_worker`, settings from the environment.

It doubles `payload["n"]`; `sleep` waits that long first, `wait_for` waits until that file exists, `fail` raises.
Each run of a job counts in Redis under `test-runs:<job id>`, so a test sees how often a job was run.
With BATCH_MAX_JOBS > 1 its batch handler doubles the jobs taken together, pushing each batch's size to the
list `test-batches:<queue>`; it answers a `fail` job with its error, an `unstorable` one with a result JSON cannot
hold, and raises for the whole batch on a `fail_batch` job (the worker then runs each job alone).
"""

import sys
import time
from pathlib import Path

from mlpatterns.jobs import Job
from mlpatterns.redis_store import sync_client
from mlpatterns.worker import WorkerSettings, run_worker


def main() -> int:
    settings = WorkerSettings()
    runs = sync_client(settings)

    def double(job: Job) -> dict:
        runs.incr(f"test-runs:{job.id}")
        payload = job.payload
        if payload.get("fail"):
            raise ValueError(f"cannot double {payload['n']}")
        while payload.get("wait_for") and not Path(payload["wait_for"]).exists():
            time.sleep(0.02)
        time.sleep(payload.get("sleep", 0))
        return {"double": 2 * payload["n"], "worker": settings.consumer_name}

    def double_all(jobs: list[Job]) -> list:
        runs.rpush(f"test-batches:{settings.queue_name}", len(jobs))
        if any(job.payload.get("fail_batch") for job in jobs):
            raise RuntimeError("this batch cannot be doubled together")
        return [
            ValueError(f"cannot double {j.payload['n']}")
            if j.payload.get("fail")
            else {"double": {1, 2}}  # a set: JSON has none
            if j.payload.get("unstorable")
            else double(j)
            for j in jobs
        ]

    return run_worker(settings, double, double_all)


if __name__ == "__main__":
    sys.exit(main())
