"""What the prediction log costs: `python -m chapter5_operations.prediction_log_pattern.bench` (`make bench P=...`).

The pattern is started three times by the local runner, the same API with PREDICTION_LOG=on (records to the file
and stdout, the shipper's stand-in tailing the file), on with PREDICTION_LOG_STDOUT=false (the file only), and
PREDICTION_LOG=off, beside the FastAPI echo floor, all with the same worker count. The runner reads each API's
stdout and the stand-in parses every record on the same cores, so stdout's cost here includes its reader's.
wrk loads each in turn, round after round (mlpatterns.bench.run.measure), POST /predict with one iris row, at 1
and 32 connections. Afterwards the logging API's own metrics must show a record written for every request it
answered and none dropped, or the command fails. Writes build/bench/prediction_log_pattern.md.
"""

import argparse
import sys
from pathlib import Path

import httpx
import orjson

from mlpatterns.bench.run import CONCURRENCIES, ECHO, Target, bench_command, measure, save_report
from mlpatterns.bench.verdict import verdict_lines
from mlpatterns.runner.run import run_pattern

PATTERN = Path(__file__).parent
BODY = orjson.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]})


def counted(url: str) -> dict[str, float]:
    """The logging API's answered /predict requests and its records, written and dropped, over its workers."""
    figures = {"answered": 0.0, "written": 0.0, "dropped": 0.0}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("http_requests_total{") and 'path="/predict"' in name and 'status="200"' in name:
            figures["answered"] += float(value)
        for outcome in ("written", "dropped"):
            if name == f'prediction_log_records_total{{outcome="{outcome}"}}':
                figures[outcome] += float(value)
    return figures


def target(label: str, run, service: str, path: str) -> Target:
    return Target(label, run.url(service) + path, run.processes(service)[0].pid)  # a runner pid leads its group


def main(argv: list[str] | None = None) -> int:
    return bench_command(__doc__, argv, bench)


def bench(args: argparse.Namespace) -> int:
    with (
        run_pattern(PATTERN, overrides={"api": {"PREDICTION_LOG": "on"}}) as on,
        run_pattern(PATTERN, overrides={"api": {"PREDICTION_LOG": "on", "PREDICTION_LOG_STDOUT": "false"}}) as file,
        run_pattern(PATTERN, overrides={"api": {"PREDICTION_LOG": "off"}}) as off,
    ):
        workers = on.running["api"].service.environment["WORKERS"]
        with run_pattern(ECHO, overrides={"echo": {"WORKERS": workers}}) as echo:
            targets = [
                target("POST /predict, PREDICTION_LOG=on", on, "api", "/predict"),
                target("POST /predict, on, the file only (PREDICTION_LOG_STDOUT=false)", file, "api", "/predict"),
                target("POST /predict, PREDICTION_LOG=off", off, "api", "/predict"),
                target("FastAPI JSON echo (floor)", echo, "echo", "/echo"),
            ]
            figures = measure(targets, BODY, args.seconds, args.warmup, args.rounds)
        log = counted(on.url("api"))
    report = render(args, workers, targets, figures, log)
    save_report(PATTERN.name, report)
    lost = log["answered"] - log["written"]
    if lost or log["dropped"] or any(f.errors for f in figures.values()):
        print(
            f"ERROR: {lost:.0f} records missing, {log['dropped']:.0f} dropped, or errors in the load", file=sys.stderr
        )
        return 1
    return 0


def render(args, workers: str, targets: list[Target], figures: dict, log: dict) -> str:
    rows = [
        f"| {t.label} | {c} | {f.rps:,.0f} | {f.p50_ms:.2f} ms | {f.p99_ms:.2f} ms | {f.cpu_us_per_request:,.0f} µs |"
        for t in targets
        for c in CONCURRENCIES
        for f in [figures[t.label, c]]
    ]
    on, file, off, echo = (t.label for t in targets)
    high, low = max(CONCURRENCIES), min(CONCURRENCIES)
    other = max(f.other_cpu for f in figures.values())
    return "\n".join(
        [
            f"## Benchmark: {PATTERN.name}",
            "",
            "- command: `make bench P=chapter5_operations/prediction_log_pattern`",
            f"- {workers} gunicorn workers each; wrk, 1 thread, body `{BODY.decode()}`; medians of {args.rounds} "
            f"runs of {args.seconds:g} s, the servers loaded in turn; other processes used up to {other:.0%} of CPU",
            "",
            "| what | connections | req/s | p50 | p99 | server CPU per request |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"- logging on / off, req/s at c={high}: {figures[on, high].rps / figures[off, high].rps:.0%}; "
            f"at c={low}: {figures[on, low].rps / figures[off, low].rps:.0%}",
            f"- the file only / off, req/s at c={high}: {figures[file, high].rps / figures[off, high].rps:.0%}; "
            f"at c={low}: {figures[file, low].rps / figures[off, low].rps:.0%}",
            f"- logging on / echo floor, req/s at c={high}: {figures[on, high].rps / figures[echo, high].rps:.0%}",
            f"- server CPU per request at c={high}, on / off: "
            f"{figures[on, high].cpu_us_per_request / figures[off, high].cpu_us_per_request:.2f}x",
            f"- records: {log['written']:,.0f} written for {log['answered']:,.0f} answered requests, "
            f"{log['dropped']:,.0f} dropped",
            *verdict_lines(
                f"logging on, c={high} {figures[on, high].rps:,.0f} req/s",
                f"{figures[on, high].rps / figures[off, high].rps:.0%} of logging off's (the floor)",
            ),
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
