"""What the shadow costs the client: `python -m chapter6_operation_management.shadow_ab_pattern.bench`
(`make bench P=chapter6_operation_management/shadow_ab_pattern`).

The pattern is started three times by the local runner: copying every request to B (MIRROR_PERCENT=100, the
pattern as it runs), copying none (MIRROR_PERCENT=0: the proxy's hop alone), and copying every request to a B
frozen for the whole measurement (SIGSTOP on its process group: each copy waits out MIRROR_TIMEOUT_SECONDS, and
past MIRROR_MAX_IN_FLIGHT copies are dropped). Beside them, A asked directly (no proxy) and the FastAPI echo
floor on the proxy's worker count. wrk loads each in turn, round after round (mlpatterns.bench.run.measure),
POST /predict/bench with one iris row, at 1 and 32 connections; an error answer fails the command. Afterwards the
proxies' counts of copies are reported (the requests wrk left unanswered at the end of a run were copied too; on
a machine loaded past what the proxy keeps up with, a copy can wait past its timeout and count as failed).
Writes build/bench/shadow_ab_pattern.md.
"""

import argparse
import os
import signal
import sys
from pathlib import Path

import httpx
import orjson

from mlpatterns.bench.run import CONCURRENCIES, ECHO, Target, bench_command, measure, save_report
from mlpatterns.bench.verdict import proxy_verdict
from mlpatterns.demo import metric_sum
from mlpatterns.runner.run import run_pattern

PATTERN = Path(__file__).parent
BODY = orjson.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]})
OUTCOMES = ("mirrored", "failed", "dropped")


def copies(url: str) -> dict[str, float]:
    """The proxy's copies to B by outcome, and the requests it answered."""
    exposition = httpx.get(url + "/metrics", timeout=10).text
    counts = {o: metric_sum(exposition, f'shadow_mirror_requests_total{{outcome="{o}"}}') for o in OUTCOMES}
    return counts | {
        "answered": metric_sum(exposition, 'http_requests_total{method="POST",path="/{path:path}",status="200"}')
    }


def target(label: str, run, service: str) -> Target:
    return Target(label, run.url(service) + "/predict/bench", run.processes(service)[0].pid)  # a group leader


def main(argv: list[str] | None = None) -> int:
    return bench_command(__doc__, argv, bench)


def bench(args: argparse.Namespace) -> int:
    with (
        run_pattern(PATTERN, overrides={"proxy": {"MIRROR_PERCENT": "100"}}) as shadowed,
        run_pattern(PATTERN, overrides={"proxy": {"MIRROR_PERCENT": "0"}}) as unshadowed,
        run_pattern(PATTERN, overrides={"proxy": {"MIRROR_PERCENT": "100"}}) as frozen,
    ):
        workers = shadowed.running["proxy"].service.environment["WORKERS"]
        frozen_group = frozen.processes("iris-rf")[0].pid
        os.killpg(frozen_group, signal.SIGSTOP)
        try:
            with run_pattern(ECHO, overrides={"echo": {"WORKERS": workers}}) as echo:
                targets = [
                    target("through the proxy, every request copied to B", shadowed, "proxy"),
                    target("through the proxy, none copied (MIRROR_PERCENT=0)", unshadowed, "proxy"),
                    target("through the proxy, copied to a frozen B (SIGSTOP)", frozen, "proxy"),
                    target("A asked directly (no proxy)", shadowed, "iris-svc"),
                    Target("FastAPI JSON echo (floor)", echo.url("echo") + "/echo", echo.processes("echo")[0].pid),
                ]
                figures = measure(targets, BODY, args.seconds, args.warmup, args.rounds)
            counts = {"B healthy": copies(shadowed.url("proxy")), "B frozen": copies(frozen.url("proxy"))}
        finally:
            os.killpg(frozen_group, signal.SIGCONT)
    save_report(PATTERN.name, render(args, workers, targets, figures, counts))
    errors = sum(f.errors for f in figures.values())
    if errors:
        print(f"ERROR: {errors} error answers or socket errors in the load", file=sys.stderr)
        return 1
    return 0


def render(args: argparse.Namespace, workers: str, targets: list[Target], figures: dict, counts: dict) -> str:
    rows = [
        f"| {t.label} | {c} | {f.rps:,.0f} | {f.p50_ms:.2f} ms | {f.p99_ms:.2f} ms | {f.cpu_us_per_request:,.0f} µs |"
        for t in targets
        for c in CONCURRENCIES
        for f in [figures[t.label, c]]
    ]
    shadowed, unshadowed, frozen, direct, echo = (t.label for t in targets)
    high, low = max(CONCURRENCIES), min(CONCURRENCIES)
    other = max(f.other_cpu for f in figures.values())

    def ratio(a: str, b: str, c: int, what: str = "rps") -> str:
        return f"{getattr(figures[a, c], what) / getattr(figures[b, c], what):.2f}x"

    return "\n".join(
        [
            f"## Benchmark: {PATTERN.name}",
            "",
            "- command: `make bench P=chapter6_operation_management/shadow_ab_pattern`",
            f"- the proxy on {workers} gunicorn workers, A and B on 1 each; wrk, 1 thread, POST /predict/bench with "
            f"`{BODY.decode()}`; medians of {args.rounds} runs of {args.seconds:g} s, the servers loaded in turn; "
            f"other processes used up to {other:.0%} of CPU",
            "",
            "| what | connections | req/s | p50 | p99 | server CPU per request |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"- copying every request / copying none, req/s at c={high}: {ratio(shadowed, unshadowed, high)}; "
            f"at c={low}: {ratio(shadowed, unshadowed, low)}; p50 at c={low}: "
            f"{ratio(shadowed, unshadowed, low, 'p50_ms')}",
            f"- B frozen / B healthy, p50 at c={low}: {ratio(frozen, shadowed, low, 'p50_ms')}; p99 at c={high}: "
            f"{ratio(frozen, shadowed, high, 'p99_ms')}; req/s at c={high}: {ratio(frozen, shadowed, high)}",
            f"- through the proxy (copying none) / A directly, p50 at c={low}: "
            f"{ratio(unshadowed, direct, low, 'p50_ms')}",
            *(
                f"- copies, {name}: {c['answered']:,.0f} requests answered, "
                + ", ".join(f"{c[o]:,.0f} {o}" for o in OUTCOMES)
                for name, c in counts.items()
            ),
            *proxy_verdict(
                figures[shadowed, low].p50_ms,
                figures[direct, low].p50_ms,
                "through the proxy as it runs (every request copied to B)",
                "A directly",
            ),
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
