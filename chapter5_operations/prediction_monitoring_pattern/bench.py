"""What storing every request costs: `python -m chapter5_operations.prediction_monitoring_pattern.bench`
(`make bench P=chapter5_operations/prediction_monitoring_pattern`).

Two runs of the pattern side by side, the API with STORE_RECORDS=on and =off (the load job held to one row, the
monitor to one check an hour, so that only wrk loads the API), and the FastAPI echo floor on as many workers. wrk
posts one iris row to each in turn, round after round, at 1 and 32 connections (mlpatterns.bench.run.measure).
Then the storing API is given up to 2 minutes to write its queues out, and its metrics must account for every
answered request: stored, or else counted failed or dropped, which fails the command. Writes
build/bench/prediction_monitoring_pattern.md.
"""

import argparse
import sys
import time
from pathlib import Path

import httpx
import orjson

from mlpatterns.bench.run import (
    CONCURRENCIES,
    ECHO,
    Target,
    bench_command,
    figures_table,
    measure,
    save_report,
)
from mlpatterns.bench.verdict import verdict_lines
from mlpatterns.runner.run import run_pattern

PATTERN = Path(__file__).parent
BODY = orjson.dumps({"data": [[5.9, 3.0, 4.2, 1.5]]})
QUIET = {"load": {"RATE_PER_SECOND": "0.001"}, "monitor": {"INTERVAL_SECONDS": "3600"}}


def records(url: str) -> dict[str, float]:
    """/predict requests answered by the API's workers, and what became of their records."""
    seen = dict.fromkeys(("answered", "stored", "failed", "dropped"), 0.0)
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("http_requests_total{") and 'path="/predict"' in name and 'status="200"' in name:
            seen["answered"] += float(value)
        elif name.startswith("prediction_records_total{state="):
            seen[name.split('"')[1]] += float(value)
    return seen


def written_out(url: str, timeout: float = 120.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while (seen := records(url))["stored"] + seen["failed"] + seen["dropped"] < seen["answered"]:
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    return seen


def main(argv: list[str] | None = None) -> int:
    return bench_command(__doc__, argv, bench)


def bench(args: argparse.Namespace) -> int:
    with (
        run_pattern(PATTERN, overrides={**QUIET, "api": {"STORE_RECORDS": "on"}}) as stored,
        run_pattern(PATTERN, overrides={**QUIET, "api": {"STORE_RECORDS": "off"}}) as unstored,
    ):
        workers = stored.running["api"].service.environment["WORKERS"]
        with run_pattern(ECHO, overrides={"echo": {"WORKERS": workers}}) as echo:
            targets = [
                Target(f"POST /predict, STORE_RECORDS={name}", run.url("api") + "/predict", run.processes("api")[0].pid)
                for name, run in (("on", stored), ("off", unstored))
            ]
            targets.append(
                Target("FastAPI JSON echo (floor)", echo.url("echo") + "/echo", echo.processes("echo")[0].pid)
            )
            figures = measure(targets, BODY, args.seconds, args.warmup, args.rounds)
        started = time.monotonic()
        seen = written_out(stored.url("api"))
        drain = time.monotonic() - started
    on, off, floor = (target.label for target in targets)
    lines = [
        f"## Benchmark: {PATTERN.name}",
        "",
        f"- command: `make bench P=chapter5_operations/prediction_monitoring_pattern`; {workers} gunicorn workers each;"
        f" wrk, body `{BODY.decode()}`; medians of {args.rounds} runs of {args.seconds:g} s",
        "",
        *figures_table([target.label for target in targets], figures),
    ]
    high = max(CONCURRENCIES)
    lines += [
        "",
        f"- storing on / off, req/s at c={high}: {figures[on, high].rps / figures[off, high].rps:.0%}; "
        f"on / echo floor: {figures[on, high].rps / figures[floor, high].rps:.0%}",
        f"- records: {seen['stored']:,.0f} stored for {seen['answered']:,.0f} answered requests, {seen['failed']:,.0f}"
        f" failed, {seen['dropped']:,.0f} dropped; the queues were written out {drain:.1f} s after the load ended",
        *verdict_lines(
            f"storing on, c=1 {figures[on, 1].rps:,.0f} req/s",
            f"{figures[on, 1].rps / figures[off, 1].rps:.0%} of storing off's (the floor)",
        ),
        "",
    ]
    report = "\n".join(lines)
    save_report(PATTERN.name, report)
    if seen["stored"] < seen["answered"] or any(f.errors for f in figures.values()):
        print("ERROR: not every answered request was stored, or the load had errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
