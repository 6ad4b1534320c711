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
must be done, with the digit's label, or the command fails. Both are run --rounds times (medians), after
--warmup seconds of load. The floor: the CNN's own onnxruntime run() on the decoded digit, in this process, one
call at a time. Writes build/bench/asynchronous_pattern.md.

    python -m chapter4_serving_patterns.asynchronous_pattern.bench [--workers 1 2] [--seconds 5] [--jobs 2000]
        [--batch-max-jobs 1]  (the workers' BATCH_MAX_JOBS: more than 1 predicts the jobs waiting together at once)
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import orjson
import redis

from mlpatterns.bench.jobs import enqueue, figures, records_since, wait_drained
from mlpatterns.bench.run import model_floor, save_report
from mlpatterns.bench.verdict import verdict_lines
from mlpatterns.bench.wrk import run_wrk
from mlpatterns.image_jobs import IMAGE_SHAPE, to_payload
from mlpatterns.images import ImagePreprocessor, sample_digits
from mlpatterns.jobs import QueueSettings
from mlpatterns.runner.run import run_pattern, stop_on_signals

PATTERN = Path(__file__).parent
QUEUE = "jobs"
MODEL = Path("models/cifar10/model.onnx")


def median_figures(runs: list[dict]) -> dict:
    """The median of each figure over the rounds; the counts of jobs and failures summed."""
    summed = ("jobs", "wrong", "errors")
    return {key: (sum if key in summed else statistics.median)([run[key] for run in runs]) for key in runs[0]}


def run(
    workers: int,
    seconds: float,
    connections: int,
    jobs: int,
    rounds: int = 1,
    warmup: float = 1.0,
    batch_max_jobs: int = 1,
) -> dict:
    os.environ["WORKER_REPLICAS"] = str(workers)  # interpolated into docker-compose.yml by the runner
    digits = sample_digits()
    body = orjson.dumps({"image_data": digits["7"]})
    worker = {"WORK_DELAY_SECONDS": "0", "BATCH_MAX_JOBS": str(batch_max_jobs)}
    with run_pattern(PATTERN, free_ports=True, overrides={"worker": worker}) as pattern:
        url = pattern.url("proxy") + "/predict"
        settings = QueueSettings(redis_url=f"redis://127.0.0.1:{pattern.port('redis')}/0", queue_name=QUEUE)
        client = redis.Redis.from_url(settings.redis_url)
        try:
            if warmup:
                run_wrk(url, body, connections, warmup)  # connections, sessions, lazy imports
                wait_drained(client, QUEUE)
            preprocess = ImagePreprocessor(shape=IMAGE_SHAPE)
            images = {label: to_payload(preprocess([image])[0]) for label, image in digits.items()}
            labels = [str(i % 10) for i in range(jobs)]
            proxied, backlog = [], []
            for _ in range(rounds):
                since = time.time()
                load = run_wrk(url, body, connections, seconds)
                wait_drained(client, QUEUE)
                done = figures(records_since(client, QUEUE, since), "7") | {"submit_per_s": load.rps}
                done |= {"post_p50_ms": load.p50_ms, "post_p99_ms": load.p99_ms}
                proxied.append(done | {"errors": load.status_errors + load.socket_errors})

                since = time.time()
                ids = enqueue(settings, [images[label] for label in labels])
                wait_drained(client, QUEUE)
                backlog.append(figures(records_since(client, QUEUE, since), dict(zip(ids, labels, strict=True))))
        finally:
            client.close()
    return {"workers": workers, "proxied": median_figures(proxied), "backlog": median_figures(backlog)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to run (default 1 2)")
    parser.add_argument("--seconds", type=float, default=5, help="wrk's load through the proxy (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="wrk's connections (default 16)")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs of the backlog (default 2000)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of both measurements, medians (default 1)")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of load before them (default 1)")
    parser.add_argument(
        "--batch-max-jobs", type=int, default=1, help="BATCH_MAX_JOBS of the workers: jobs per model call (default 1)"
    )
    args = parser.parse_args(argv)
    stop_on_signals()
    rows = []
    for workers in args.workers:
        print(f"{workers} worker(s)...", flush=True)
        rows.append(
            run(workers, args.seconds, args.connections, args.jobs, args.rounds, args.warmup, args.batch_max_jobs)
        )
    print("the CNN alone, in process...", flush=True)
    floor = model_floor(MODEL, [sample_digits()["7"]], min(args.seconds, 3.0))[0]
    report = render(args, rows, floor)
    save_report(PATTERN.name, report)
    bad = sum(row["proxied"]["wrong"] + row["proxied"]["errors"] + row["backlog"]["wrong"] for row in rows)
    if bad:
        print(f"ERROR: {bad} jobs failed, got a wrong label or a POST was refused", file=sys.stderr)
    return 1 if bad else 0


def render(args: argparse.Namespace, rows: list[dict], floor: float) -> str:
    lines = [
        f"## Benchmark: {PATTERN.name}",
        "",
        "- command: `make bench P=chapter4_serving_patterns/asynchronous_pattern`",
        f"- {os.cpu_count()} cores; the proxy: 2 gunicorn workers; wrk: {args.connections} connections, "
        f"{args.seconds:g} s after {args.warmup:g} s of warm-up; backlog: {args.jobs} jobs; medians of "
        f"{args.rounds} round(s); "
        + (f"up to {args.batch_max_jobs} jobs per model call" if args.batch_max_jobs > 1 else "a job per model call"),
        "",
        "| workers | load | jobs | submitted/s | POST p50 / p99 | jobs/s | queue wait p50 / p99 | work p50 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        p, b = row["proxied"], row["backlog"]
        lines += [
            f"| {row['workers']} | through the proxy | {p['jobs']:,} | {p['submit_per_s']:,.0f} "
            f"| {p['post_p50_ms']:.1f} / {p['post_p99_ms']:.1f} ms | {p['jobs_per_s']:,.0f} "
            f"| {p['wait_p50_ms']:.1f} / {p['wait_p99_ms']:.1f} ms | {p['work_p50_ms']:.2f} ms |",
            f"| {row['workers']} | backlog | {b['jobs']:,} | | | {b['jobs_per_s']:,.0f} "
            f"| {b['wait_p50_ms']:,.0f} / {b['wait_p99_ms']:,.0f} ms | {b['work_p50_ms']:.2f} ms |",
        ]
    lines += ["", f"- the floor: the CNN alone in process, {floor:,.0f} calls/s ({1e6 / floor:,.0f} µs a call)"]
    backlog = {row["workers"]: row["backlog"] for row in rows}
    if len(backlog) > 1:
        fewest, most = min(backlog), max(backlog)
        lines.append(
            f"- backlog jobs/s, {most} workers / {fewest}: "
            f"{backlog[most]['jobs_per_s'] / backlog[fewest]['jobs_per_s']:.2f}x"
        )
    most = max(backlog)
    lines += [
        *verdict_lines(
            f"backlog with {most} worker(s) {backlog[most]['jobs_per_s']:,.0f} jobs/s, queue wait p50 "
            f"{backlog[most]['wait_p50_ms']:,.0f} ms",
            f"{backlog[most]['jobs_per_s'] / floor:.0%} of the CNN's calls/s in process",
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
