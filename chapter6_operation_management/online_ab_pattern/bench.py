"""What the split costs: `python -m chapter6_operation_management.online_ab_pattern.bench` (`make bench P=...`).

POST /predict with one iris row, through HAProxy to the two models (one gunicorn worker each), beside the SVC
alone, asked directly, with two workers: the same two workers of model serving, without the proxy's hop. wrk
loads them in turn, round after round (mlpatterns.bench.run.measure), at 1 and 32 connections. The proxy's CPU
per request is HAProxy's own. Afterwards the models' /metrics give the split under load, which must be within the
99.9% binomial band of SVC_PERCENT, or the command fails. Writes build/bench/online_ab_pattern.md.
"""

import argparse
import sys
from pathlib import Path

import httpx
import orjson
from scipy.stats import binom

from mlpatterns.bench.run import CONCURRENCIES, Target, bench_command, measure, save_report
from mlpatterns.bench.verdict import proxy_verdict
from mlpatterns.demo import metric_sum
from mlpatterns.runner.run import run_pattern

PATTERN = Path(__file__).parent
BODY = orjson.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]})
ANSWERED = 'http_requests_total{method="POST",path="/predict",status="200"}'


def answered(run, service: str) -> float:
    return metric_sum(httpx.get(run.url(service) + "/metrics", timeout=10).text, ANSWERED)


def main(argv: list[str] | None = None) -> int:
    return bench_command(__doc__, argv, bench)


def bench(args: argparse.Namespace) -> int:
    with (
        run_pattern(PATTERN) as split,
        run_pattern(PATTERN, overrides={"iris-svc": {"WORKERS": "2"}}) as direct,
    ):
        targets = [
            Target(
                "POST /predict through HAProxy, 1 worker per model",
                split.url("proxy") + "/predict",
                split.processes("proxy")[0].pid,
            ),
            Target(
                "POST /predict to the SVC directly, 2 workers",
                direct.url("iris-svc") + "/predict",
                direct.processes("iris-svc")[0].pid,
            ),
        ]
        figures = measure(targets, BODY, args.seconds, args.warmup, args.rounds)
        counts = {service: answered(split, service) for service in ("iris-svc", "iris-rf")}
        percent = int(split.running["proxy"].service.environment["SVC_PERCENT"])
    total = sum(counts.values())
    low, high = binom.ppf(0.0005, total, percent / 100), binom.ppf(0.9995, total, percent / 100)
    report = render(args, targets, figures, counts, percent, (low, high))
    save_report(PATTERN.name, report)
    if not low <= counts["iris-svc"] <= high or any(f.errors for f in figures.values()):
        print("ERROR: the split under load is off its weight, or the load had errors", file=sys.stderr)
        return 1
    return 0


def render(args, targets: list[Target], figures: dict, counts: dict, percent: int, band: tuple) -> str:
    rows = [
        f"| {t.label} | {c} | {f.rps:,.0f} | {f.p50_ms:.2f} ms | {f.p99_ms:.2f} ms | {f.cpu_us_per_request:,.0f} µs |"
        for t in targets
        for c in CONCURRENCIES
        for f in [figures[t.label, c]]
    ]
    proxied, direct = (t.label for t in targets)
    total = sum(counts.values())
    other = max(f.other_cpu for f in figures.values())
    ratios = [
        f"c={c}: {figures[proxied, c].rps / figures[direct, c].rps:.0%} of the req/s, "
        f"p50 {figures[proxied, c].p50_ms / figures[direct, c].p50_ms:.2f}x"
        for c in CONCURRENCIES
    ]
    return "\n".join(
        [
            f"## Benchmark: {PATTERN.name}",
            "",
            "- command: `make bench P=chapter6_operation_management/online_ab_pattern`",
            f"- wrk, 1 thread, body `{BODY.decode()}`; medians of {args.rounds} runs of {args.seconds:g} s, the "
            f"two loaded in turn; other processes used up to {other:.0%} of CPU",
            "",
            "| what | connections | req/s | p50 | p99 | server CPU per request |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"- through the proxy / directly: {'; '.join(ratios)}",
            f"- the split under load: {counts['iris-svc']:,.0f} of {total:,.0f} answered by the SVC, "
            f"{counts['iris-svc'] / max(total, 1):.1%} (SVC_PERCENT={percent}; "
            f"99.9% band {band[0]:,.0f}-{band[1]:,.0f})",
            *proxy_verdict(
                figures[proxied, 1].p50_ms, figures[direct, 1].p50_ms, "through HAProxy", "the SVC directly"
            ),
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
