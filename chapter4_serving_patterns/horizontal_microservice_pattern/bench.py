"""What the fan-out costs beside its backends: `make bench P=chapter4_serving_patterns/horizontal_microservice_pattern`
(`python -m chapter4_serving_patterns.horizontal_microservice_pattern.bench`).

The pattern is started by the local runner; wrk loads, each in turn, round after round (mlpatterns.bench.run.measure),
the proxy's POST /predict/label (one iris row, asked of the three backends at once), each backend's POST /predict
asked directly with the same row, and the FastAPI echo floor on the proxy's worker count, at 1 and 32 connections.
A fan-out waits for its slowest backend, so the figure that matters is its p50 over the slowest backend's p50
(asked alone); the rest is the proxy's own hop. An error answer fails the command. Writes
build/bench/horizontal_microservice_pattern.md.
"""

import argparse
import sys
from pathlib import Path

import orjson

from mlpatterns.bench.run import CONCURRENCIES, ECHO, Target, bench_command, figures_table, measure, save_report
from mlpatterns.runner.run import run_pattern
from mlpatterns.settings import IRIS_SAMPLE

PATTERN = Path(__file__).parent
BACKENDS = ("setosa", "versicolor", "virginica")
BODY = orjson.dumps({"data": IRIS_SAMPLE})


def target(label: str, run, service: str, path: str) -> Target:
    return Target(label, run.url(service) + path, run.processes(service)[0].pid)  # a group leader: its group


def main(argv: list[str] | None = None) -> int:
    return bench_command(__doc__, argv, bench)


def bench(args: argparse.Namespace) -> int:
    with run_pattern(PATTERN) as run:
        workers = run.running["proxy"].service.environment["WORKERS"]
        with run_pattern(ECHO, overrides={"echo": {"WORKERS": workers}}) as echo:
            targets = [
                target("proxy POST /predict/label (fan-out to 3)", run, "proxy", "/predict/label"),
                *(target(f"{name} POST /predict directly", run, name, "/predict") for name in BACKENDS),
                target("FastAPI JSON echo (floor)", echo, "echo", "/echo"),
            ]
            figures = measure(targets, BODY, args.seconds, args.warmup, args.rounds)
    save_report(PATTERN.name, render(args, workers, [t.label for t in targets], figures))
    errors = sum(f.errors for f in figures.values())
    if errors:
        print(f"ERROR: {errors} error answers or socket errors in the load", file=sys.stderr)
        return 1
    return 0


def render(args: argparse.Namespace, workers: str, labels: list[str], figures: dict) -> str:
    proxy, *backends, _ = labels
    other = max(f.other_cpu for f in figures.values())
    lines = []
    for c in CONCURRENCIES:
        slowest = max(backends, key=lambda label: figures[label, c].p50_ms)
        fan_out, alone = figures[proxy, c].p50_ms, figures[slowest, c].p50_ms
        lines.append(
            f"- c={c}: the fan-out's p50 {fan_out:.2f} ms is {fan_out / alone:.2f}x the slowest backend's asked alone "
            f"({slowest.split()[0]}, {alone:.2f} ms): the proxy adds {fan_out - alone:.2f} ms"
        )
    return "\n".join(
        [
            f"## Benchmark: {PATTERN.name}",
            "",
            f"- command: `make bench P={PATTERN.relative_to(PATTERN.parents[1])}`",
            f"- the proxy on {workers} gunicorn workers, each backend on 1; wrk, 1 thread, `{BODY.decode()}`; medians "
            f"of {args.rounds} runs of {args.seconds:g} s, the servers loaded in turn; other processes used up to "
            f"{other:.0%} of CPU",
            "",
            *figures_table(labels, figures),
            "",
            *lines,
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
