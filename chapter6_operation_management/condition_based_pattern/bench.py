"""What the router costs: `python -m chapter6_operation_management.condition_based_pattern.bench`
(`make bench P=chapter6_operation_management/condition_based_pattern`).

The pattern started once by the local runner: wrk posts one sample digit to each route through HAProxy (no header:
the digits model; `target: speech`: the words model) and to each model straight, in turn, round after round, at 1
and 32 connections (mlpatterns.bench.run.measure), beside the FastAPI echo floor on as many workers. Before that,
one second of load on each route is counted on both models' /metrics: the command fails unless every request of
that second reached its route's model and none the other. Writes build/bench/condition_based_pattern.md.
"""

import argparse
import sys
from pathlib import Path

import httpx
import orjson

from mlpatterns.bench.run import CONCURRENCIES, ECHO, Target, bench_command, figures_table, measure, save_report
from mlpatterns.bench.verdict import proxy_verdict
from mlpatterns.bench.wrk import run_wrk
from mlpatterns.demo import metric_sum
from mlpatterns.image_jobs import SAMPLE
from mlpatterns.runner.run import PatternRun, run_pattern

PATTERN = Path(__file__).parent
BODY = orjson.dumps({"image_data": SAMPLE["7"]})
SPEECH = {"target": "speech"}
MODELS = ("digits", "words")


def predictions(run: PatternRun) -> dict[str, float]:
    """Each model's count of model calls."""
    prefix = 'model_stage_seconds_count{{model="{}",stage="model"}}'
    return {name: metric_sum(httpx.get(run.url(name) + "/metrics").text, prefix.format(name)) for name in MODELS}


def routing_errors(run: PatternRun) -> list[str]:
    """One second of wrk load on each route: every request must reach the route's model, none the other. (wrk
    counts the requests answered within the second; up to one per connection is answered after it.)"""
    errors, connections = [], 4
    for headers, model in ((None, "digits"), (SPEECH, "words")):
        before = predictions(run)
        load = run_wrk(run.url("proxy") + "/predict", BODY, connections, 1.0, headers=headers)
        after = predictions(run)
        asked = {name: after[name] - before[name] for name in MODELS}
        other = next(name for name in MODELS if name != model)
        if asked[other] or not load.requests <= asked[model] <= load.requests + connections:
            errors.append(f"headers {headers}: {load.requests} requests sent, the models asked {asked}")
    return errors


def main(argv: list[str] | None = None) -> int:
    return bench_command(__doc__, argv, bench)


def bench(args: argparse.Namespace) -> int:
    with run_pattern(PATTERN) as run:
        errors = routing_errors(run)
        workers = run.running["digits"].service.environment["WORKERS"]
        with run_pattern(ECHO, overrides={"echo": {"WORKERS": workers}}) as echo:
            proxy = run.processes("proxy")[0].pid
            targets = [
                Target("HAProxy -> digits (no header)", run.url("proxy") + "/predict", proxy),
                Target("HAProxy -> words (target: speech)", run.url("proxy") + "/predict", proxy, SPEECH),
                Target("digits model, straight", run.url("digits") + "/predict", run.processes("digits")[0].pid),
                Target("words model, straight", run.url("words") + "/predict", run.processes("words")[0].pid),
                Target("FastAPI JSON echo (floor)", echo.url("echo") + "/echo", echo.processes("echo")[0].pid),
            ]
            figures = measure(targets, BODY, args.seconds, args.warmup, args.rounds)
    lines = [
        f"## Benchmark: {PATTERN.name}",
        "",
        f"- command: `make bench P=chapter6_operation_management/condition_based_pattern`; {workers} gunicorn workers"
        f" per model; wrk, POST /predict with the sample digit 7 (PNG, {len(BODY):,} bytes of JSON); medians of"
        f" {args.rounds} runs of {args.seconds:g} s. The HAProxy rows' CPU is HAProxy's own, the model's not counted.",
        "",
        *figures_table([target.label for target in targets], figures),
    ]
    lines.append("")
    for routed, straight in ((targets[0], targets[2]), (targets[1], targets[3])):
        for c in CONCURRENCIES:
            ratio = figures[routed.label, c].rps / figures[straight.label, c].rps
            extra = figures[routed.label, c].p50_ms - figures[straight.label, c].p50_ms
            lines.append(f"- c={c}: {routed.label} / {straight.label}: {ratio:.0%} of the req/s, p50 {extra:+.2f} ms")
    lines.append(f"- routing check: {'every request reached its route' if not errors else '; '.join(errors)}")
    # The verdict on the route that adds the most.
    routed, straight = max(
        ((targets[0], targets[2]), (targets[1], targets[3])),
        key=lambda pair: figures[pair[0].label, 1].p50_ms - figures[pair[1].label, 1].p50_ms,
    )
    lines += [
        *proxy_verdict(
            figures[routed.label, 1].p50_ms, figures[straight.label, 1].p50_ms, routed.label, straight.label
        ),
        "",
    ]
    save_report(PATTERN.name, "\n".join(lines))
    if errors or any(f.errors for f in figures.values()):
        print("ERROR: a request reached the wrong model, or the load had errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
