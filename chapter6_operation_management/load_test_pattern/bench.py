"""How much load the load job makes: `python -m chapter6_operation_management.load_test_pattern.bench`
(`make bench P=chapter6_operation_management/load_test_pattern`).

The pattern's API is started once by the local runner. Round after round, the same API is loaded for the same time
at the same concurrency by wrk (C, the fastest client there is) and by the load job unpaced (RATE=0: locust, one
process, each user sending as soon as it is answered), so a slow spell of a shared machine hits both alike. The
medians give the share of wrk's throughput that one locust process reaches: past it, a load test measures its
client, not the API (run more processes or more Job pods). Then the book's scenario, 100 requests/s, once.
Every run must answer every request, or the command fails. Writes build/bench/load_test_pattern.md.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

import orjson

from chapter6_operation_management.load_test_pattern.demo import load_job
from chapter6_operation_management.load_test_pattern.report import Report, read_report
from mlpatterns.bench.run import bench_command, save_report
from mlpatterns.bench.verdict import verdict_lines
from mlpatterns.bench.wrk import run_wrk
from mlpatterns.runner.run import RunnerError, run_pattern

PATTERN = Path(__file__).parent
CONNECTIONS = 10  # the job's users: one connection each
UNPACED = {"USERS": str(CONNECTIONS), "SPAWN_RATE": "1000"}  # all users at once, as wrk opens its connections
BODY = orjson.dumps({"data": [[1.0, 2.0, 3.0, 4.0]]})  # locustfile.BODY (importing it here would import locust)


def run_job(url: str, **settings: str) -> Report:
    with tempfile.TemporaryDirectory(prefix="load-test-bench-") as reports:
        command, env = load_job(TARGET_URL=url, REPORT_DIR=reports, MAX_P99_MS="10000", **settings)
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RunnerError(f"the load job failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")
        return read_report(Path(reports) / "load")


def main(argv: list[str] | None = None) -> int:
    return bench_command(__doc__, argv, bench, add_options)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--book-seconds", type=int, default=20, help="of the book's scenario (default: 20, as compose)")


def bench(args: argparse.Namespace) -> int:
    with run_pattern(PATTERN) as run:
        url = run.url("api")
        body = BODY
        run_wrk(url + "/predict", body, CONNECTIONS, args.warmup or 1)  # connections, lazy imports
        wrk, locust = [], []
        for round_number in range(1, args.rounds + 1):
            wrk.append(run_wrk(url + "/predict", body, CONNECTIONS, args.seconds))
            locust.append(run_job(url, RATE="0", RUN_TIME=f"{args.seconds:.0f}s", **UNPACED))
            print(
                f"  round {round_number}/{args.rounds}: wrk {wrk[-1].rps:,.0f} req/s, "
                f"locust {locust[-1].rate:,.0f} req/s ({locust[-1].rate / wrk[-1].rps:.0%})",
                flush=True,
            )
        book = run_job(url, RUN_TIME=f"{args.book_seconds}s")  # the compose job's settings: 100 requests/s
    if any(load.status_errors or load.socket_errors for load in wrk):
        print("ERROR: wrk saw errors", file=sys.stderr)
        return 1

    ratios = [r.rate / w.rps for r, w in zip(locust, wrk, strict=True)]
    rows = [
        ("wrk", median(w.rps for w in wrk), median(w.p50_ms for w in wrk), median(w.p99_ms for w in wrk)),
        (
            "locust (the load job, RATE=0)",
            median(r.rate for r in locust),
            median(r.latencies_ms["50%"] for r in locust),
            median(r.latencies_ms["99%"] for r in locust),
        ),
    ]
    lines = [
        f"## Benchmark: {PATTERN.name}",
        "",
        "- command: `make bench P=chapter6_operation_management/load_test_pattern`",
        "",
        f"POST /predict, one iris row, {CONNECTIONS} connections, {args.rounds} rounds of {args.seconds:g} s (medians)",
        "",
        "| client | req/s | p50 | p99 |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {rps:,.0f} | {p50:.2f} ms | {p99:.2f} ms |" for name, rps, p50, p99 in rows),
        "",
        f"One locust process reaches {median(ratios):.0%} of wrk's throughput "
        f"on the same API (the median of the rounds' ratios; from {min(ratios):.0%} to {max(ratios):.0%}).",
        f"The book's scenario (100 requests/s, {book.duration:.0f} s): {book.requests} requests, "
        f"{book.failures} failed, p50 {book.latencies_ms['50%']:g} ms, p99 {book.latencies_ms['99%']:g} ms, "
        f"max {book.latencies_ms['max']:.1f} ms.",
        "",
        *verdict_lines(
            f"one locust process {rows[1][1]:,.0f} req/s", f"{median(ratios):.0%} of wrk's (the floor) on the same API"
        ),
    ]
    report = "\n".join(lines) + "\n"
    save_report(PATTERN.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
