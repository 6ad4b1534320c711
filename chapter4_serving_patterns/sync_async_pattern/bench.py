"""The sync answer's latency and the heavy job's time to done: `make bench P=<this directory>`.

Starts the pattern through the local runner (free ports, 2 workers, WORK_DELAY_SECONDS=0: the real CNN, nothing
added), then for each number of connections (1 and 8) wrk POSTs a sample digit to /predict for --seconds: each
POST is answered with the sync model's label and a job id, and queues a job for the workers' CNN. Requests/s and
the POST's latency are wrk's: the sync answer, which includes decoding, the sync model and storing the job. Once
the queue's counters say every job is finished, the jobs' figures come from their records
(`mlpatterns.bench.jobs`): jobs/s, time to done (the result minus the submission) and its part waiting in the
queue. Every job must be done with the digit's label, and every POST answered, or the command fails. Beside them,
the two models alone in this process (onnxruntime's run() on one decoded digit), the floors of both paths.
--rounds repeats each load (medians), after --warmup seconds of it. Writes build/bench/sync_async_pattern.md.

    python -m chapter4_serving_patterns.sync_async_pattern.bench [--connections 1 8] [--seconds 5]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import orjson
import redis

from mlpatterns.bench.jobs import figures, records_since, wait_drained
from mlpatterns.bench.run import model_floor, save_report
from mlpatterns.bench.verdict import verdict_lines
from mlpatterns.bench.wrk import run_wrk
from mlpatterns.images import sample_digits
from mlpatterns.runner.run import run_pattern, stop_on_signals

PATTERN = Path(__file__).parent
QUEUE = "jobs"
MODELS = {"sync": Path("models/digits_linear/model.onnx"), "async": Path("models/cifar10/model.onnx")}


def run(connections: list[int], seconds: float, rounds: int = 1, warmup: float = 1.0) -> list[dict]:
    digit = sample_digits()["7"]
    body = orjson.dumps({"image_data": digit})
    rows = []
    with run_pattern(PATTERN, free_ports=True, overrides={"worker": {"WORK_DELAY_SECONDS": "0"}}) as pattern:
        url = pattern.url("proxy") + "/predict"
        client = redis.Redis.from_url(f"redis://127.0.0.1:{pattern.port('redis')}/0")
        try:
            if warmup:
                run_wrk(url, body, max(connections), warmup)  # connections, sessions, lazy imports
                wait_drained(client, QUEUE)
            for count in connections:
                print(f"{count} connection(s)...", flush=True)
                loads, jobs = [], []
                for _ in range(rounds):
                    since = time.time()
                    loads.append(run_wrk(url, body, count, seconds))
                    wait_drained(client, QUEUE)
                    jobs.append(figures(records_since(client, QUEUE, since), "7"))
                load = {
                    "rps": statistics.median(load.rps for load in loads),
                    "p50_ms": statistics.median(load.p50_ms for load in loads),
                    "p99_ms": statistics.median(load.p99_ms for load in loads),
                    "errors": sum(load.status_errors + load.socket_errors for load in loads),
                }
                done = {key: statistics.median(run[key] for run in jobs) for key in jobs[0]}
                done |= {"jobs": sum(run["jobs"] for run in jobs), "wrong": sum(run["wrong"] for run in jobs)}
                rows.append({"connections": count, "load": load, "jobs": done})
        finally:
            client.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8], help="wrk's connections (default 1 8)")
    parser.add_argument("--seconds", type=float, default=5, help="wrk's load at each (default 5)")
    parser.add_argument("--rounds", type=int, default=1, help="loads at each, medians (default 1)")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of load before them (default 1)")
    args = parser.parse_args(argv)
    stop_on_signals()
    rows = run(args.connections, args.seconds, args.rounds, args.warmup)
    print("models alone, in process...", flush=True)
    floors = {
        side: model_floor(path, [sample_digits()["7"]], min(args.seconds, 2.0))[0] for side, path in MODELS.items()
    }
    save_report(PATTERN.name, render(args, rows, floors))
    bad = sum(row["jobs"]["wrong"] + row["load"]["errors"] for row in rows)
    if bad:
        print(f"ERROR: {bad} jobs failed or got a wrong label, or POSTs were refused", file=sys.stderr)
    return 1 if bad else 0


def render(args: argparse.Namespace, rows: list[dict], floors: dict) -> str:
    lines = [
        f"## Benchmark: {PATTERN.name}",
        "",
        "- command: `make bench P=chapter4_serving_patterns/sync_async_pattern`",
        f"- {os.cpu_count()} cores; the proxy: 2 gunicorn workers; 2 job workers; wrk {args.seconds:g} s at each "
        f"number of connections, medians of {args.rounds} round(s), after {args.warmup:g} s of warm-up",
        "",
        "| connections | sync answers/s | sync answer p50 / p99 | jobs | jobs/s | job to done p50 / p99 | queued p50 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        load, jobs = row["load"], row["jobs"]
        lines.append(
            f"| {row['connections']} | {load['rps']:,.0f} | {load['p50_ms']:.1f} / {load['p99_ms']:.1f} ms "
            f"| {jobs['jobs']:,} | {jobs['jobs_per_s']:,.0f} | {jobs['done_p50_ms']:,.1f} / {jobs['done_p99_ms']:,.1f} "
            f"ms | {jobs['wait_p50_ms']:,.1f} ms |"
        )
    lines += ["", "| model alone (onnxruntime, one digit) | calls/s | per call |", "|---|---:|---:|"]
    lines += [
        f"| {side}: {path.parent.name} | {floors[side]:,.0f} | {1e6 / floors[side]:.1f} µs |"
        for side, path in MODELS.items()
    ]
    top = rows[-1]
    lines += [
        "",
        *verdict_lines(
            f"at c={top['connections']} the sync answer's p50 {top['load']['p50_ms']:.1f} ms while the jobs wait "
            f"{top['jobs']['wait_p50_ms']:,.0f} ms (p50) in the queue; {top['jobs']['jobs_per_s']:,.0f} jobs/s",
            f"{top['jobs']['jobs_per_s'] / floors['async']:.0%} of the CNN's calls/s in process",
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
