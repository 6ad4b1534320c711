"""Job throughput and queue wait: `python -m chapter4_serving_patterns.asynchronous_pattern.bench`.

Starts the pattern through the local runner (free ports, WORK_DELAY_SECONDS=0) with 1 worker, then with 2
(compose's `deploy.replicas: ${WORKER_REPLICAS:-2}`), and measures two things in each:

1. through the proxy: wrk POSTs a sample digit to /predict for --seconds at --connections; the proxy decodes,
   checks and queues each image while the workers predict. Submissions/s and the POST's latency are wrk's;
2. a backlog: --jobs decoded images put on the queue directly (as the proxy would), faster than any worker
   takes them, so the workers run flat out: their own throughput, and how long a backlog keeps a job waiting.

Every figure but wrk's comes from the job records' own timestamps, read from Redis once the queue's counters
say all jobs are finished: jobs/s is the number of jobs over the time from the first submission to the last
result; queue wait is a worker's start minus the submission; work is the result minus the start. Every job
must be done, with the digit's label, or the command fails.

    python -m chapter4_serving_patterns.asynchronous_pattern.bench [--workers 1 2] [--seconds 5] [--jobs 2000]
        [--batch-max-jobs 1]  (the workers' BATCH_MAX_JOBS: more than 1 predicts the jobs waiting together at once)
"""

import argparse
import os
import sys
import time
from pathlib import Path

import orjson
import redis

from mlpatterns.bench.jobs import enqueue, figures, records_since, wait_drained
from mlpatterns.bench.wrk import run_wrk
from mlpatterns.image_jobs import IMAGE_SHAPE, to_payload
from mlpatterns.images import ImagePreprocessor, sample_digits
from mlpatterns.jobs import QueueSettings
from mlpatterns.runner.run import run_pattern, stop_on_signals

PATTERN = Path(__file__).parent
QUEUE = "jobs"


def run(workers: int, seconds: float, connections: int, jobs: int, batch_max_jobs: int = 1) -> dict:
    os.environ["WORKER_REPLICAS"] = str(workers)  # interpolated into docker-compose.yml by the runner
    digits = sample_digits()
    body = orjson.dumps({"image_data": digits["7"]})
    worker = {"WORK_DELAY_SECONDS": "0", "BATCH_MAX_JOBS": str(batch_max_jobs)}
    with run_pattern(PATTERN, free_ports=True, overrides={"worker": worker}) as pattern:
        url = pattern.url("proxy") + "/predict"
        settings = QueueSettings(redis_url=f"redis://127.0.0.1:{pattern.port('redis')}/0", queue_name=QUEUE)
        client = redis.Redis.from_url(settings.redis_url)
        try:
            run_wrk(url, body, connections, 1.0)  # warm-up: connections, sessions, lazy imports
            wait_drained(client, QUEUE)

            since = time.time()
            load = run_wrk(url, body, connections, seconds)
            wait_drained(client, QUEUE)
            proxied = figures(records_since(client, QUEUE, since), "7") | {"submit_per_s": load.rps}
            proxied |= {"post_p50_ms": load.p50_ms, "post_p99_ms": load.p99_ms, "errors": load.status_errors}

            preprocess = ImagePreprocessor(shape=IMAGE_SHAPE)
            images = {label: to_payload(preprocess([image])[0]) for label, image in digits.items()}
            labels = [str(i % 10) for i in range(jobs)]
            since = time.time()
            ids = enqueue(settings, [images[label] for label in labels])
            wait_drained(client, QUEUE)
            backlog = figures(records_since(client, QUEUE, since), dict(zip(ids, labels, strict=True)))
        finally:
            client.close()
    return {"workers": workers, "proxied": proxied, "backlog": backlog}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to run (default 1 2)")
    parser.add_argument("--seconds", type=float, default=5, help="wrk's load through the proxy (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="wrk's connections (default 16)")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs of the backlog (default 2000)")
    parser.add_argument(
        "--batch-max-jobs", type=int, default=1, help="BATCH_MAX_JOBS of the workers: jobs per model call (default 1)"
    )
    args = parser.parse_args(argv)
    stop_on_signals()
    rows = []
    for workers in args.workers:
        print(f"{workers} worker(s)...", flush=True)
        rows.append(run(workers, args.seconds, args.connections, args.jobs, args.batch_max_jobs))
    load = f"wrk: {args.connections} connections, {args.seconds:g} s"
    batching = f"up to {args.batch_max_jobs} jobs per model call" if args.batch_max_jobs > 1 else "a job per model call"
    print(f"\n{os.cpu_count()} cores; the proxy: 2 gunicorn workers; {load}; backlog: {args.jobs} jobs; {batching}\n")
    print("| workers | load | jobs | submitted/s | POST p50 / p99 | jobs/s | queue wait p50 / p99 | work p50 |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    bad = 0
    for row in rows:
        p, b = row["proxied"], row["backlog"]
        print(
            f"| {row['workers']} | through the proxy | {p['jobs']:,} | {p['submit_per_s']:,.0f} "
            f"| {p['post_p50_ms']:.1f} / {p['post_p99_ms']:.1f} ms | {p['jobs_per_s']:,.0f} "
            f"| {p['wait_p50_ms']:.1f} / {p['wait_p99_ms']:.1f} ms | {p['work_p50_ms']:.2f} ms |"
        )
        print(
            f"| {row['workers']} | backlog | {b['jobs']:,} | | | {b['jobs_per_s']:,.0f} "
            f"| {b['wait_p50_ms']:,.0f} / {b['wait_p99_ms']:,.0f} ms | {b['work_p50_ms']:.2f} ms |"
        )
        bad += p["wrong"] + p["errors"] + b["wrong"]
    if bad:
        print(f"\n{bad} jobs failed, got a wrong label or a POST was refused")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
