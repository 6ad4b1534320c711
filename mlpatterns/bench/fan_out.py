"""The bench of the fan-out proxies (horizontal_microservice, parameter_based): the proxy beside every backend it
asks, each asked directly, in one run.

    make bench P=chapter4_serving_patterns/horizontal_microservice_pattern   (the pattern's bench.py calls main)

The pattern is started once by the local runner. The backends are the proxy's SERVICE_<NAME> services, those it
leaves out (ACTIVATE_<NAME>=0) set aside. wrk posts the compose file's `x-bench` body to the proxy's `x-bench` path
and, in turn, round after round, the same body to each backend's POST /predict (mlpatterns.bench.run.measure), at 1
and 32 connections. A fan-out waits for its slowest backend, so that one is the floor: the proxy's p50 at one
connection is set beside the slowest backend's, as a ratio and as the time added. Writes build/bench/<pattern>.md.
"""

import argparse
import sys
from pathlib import Path

import orjson

from mlpatterns.bench.run import CONCURRENCIES, Target, bench_command, bench_spec, figures_table, measure, save_report
from mlpatterns.bench.verdict import verdict_lines
from mlpatterns.runner.run import REPO_ROOT, run_pattern

OFF = ("0", "false", "no", "off")


def backends(proxy_environment: dict[str, str]) -> list[str]:
    """The services the proxy asks: SERVICE_<NAME>, unless ACTIVATE_<NAME> switches it off."""
    return [
        key.removeprefix("SERVICE_").lower()
        for key in proxy_environment
        if key.startswith("SERVICE_")
        and proxy_environment.get(f"ACTIVATE_{key.removeprefix('SERVICE_')}", "1").lower() not in OFF
    ]


def main(pattern: Path, argv: list[str] | None = None, max_ratio: float | None = None, max_added_ms=None) -> int:
    """The target, if any: the proxy's p50 at c=1 at most `max_ratio` times the slowest backend's, or at most
    `max_added_ms` above it."""

    def bench(args: argparse.Namespace) -> int:
        spec = bench_spec(pattern)
        path, body = spec.get("path", "/predict"), orjson.dumps(spec["body"])
        with run_pattern(pattern) as run:
            proxy = spec.get("service", "proxy")
            asked = backends(run.running[proxy].service.environment)
            targets = [Target(f"POST {path} (the proxy)", run.url(proxy) + path, run.processes(proxy)[0].pid)]
            targets += [
                Target(f"POST /predict to {name}, directly", run.url(name) + "/predict", run.processes(name)[0].pid)
                for name in asked
            ]
            figures = measure(targets, body, args.seconds, args.warmup, args.rounds)
        report = render(pattern, args, body, targets, figures, max_ratio, max_added_ms)
        save_report(pattern.name, report)
        errors = sum(f.errors for f in figures.values())
        if errors:
            print(f"ERROR: {errors} non-2xx answers or socket errors in the load", file=sys.stderr)
        return 1 if errors else 0

    return bench_command(__doc__, argv, bench)


def render(pattern: Path, args, body: bytes, targets: list[Target], figures: dict, max_ratio, max_added_ms) -> str:
    low, high = min(CONCURRENCIES), max(CONCURRENCIES)
    proxy, *direct = (target.label for target in targets)
    slowest = max(direct, key=lambda label: figures[label, low].p50_ms)
    proxy_p50, slowest_p50 = figures[proxy, low].p50_ms, figures[slowest, low].p50_ms
    ratio, added = proxy_p50 / slowest_p50, proxy_p50 - slowest_p50
    slowest_name = slowest.removeprefix("POST /predict to ").removesuffix(", directly")
    if max_ratio is not None:
        target, met = f"p50 at c={low} at most {max_ratio:g}x the slowest backend's", ratio <= max_ratio
    elif max_added_ms is not None:
        target, met = (
            f"at most {max_added_ms:g} ms added to the slowest backend's p50 at c={low}",
            added <= max_added_ms,
        )
    else:
        target = met = None
    other = max(f.other_cpu for f in figures.values())
    lines = [
        f"## Benchmark: {pattern.name}",
        "",
        f"- command: `make bench P={pattern.resolve().relative_to(REPO_ROOT)}`",
        f"- wrk, 1 thread, body `{body.decode()}`; medians of {args.rounds} runs of {args.seconds:g} s, the servers "
        f"loaded in turn, after {args.warmup:g} s of warm-up; other processes used up to {other:.0%} of the CPU",
        "- server CPU: the proxy's own on its rows (its backends' not counted)",
        "",
        *figures_table([target.label for target in targets], figures),
        "",
        f"- the proxy's req/s at c={high}: {figures[proxy, high].rps / figures[slowest, high].rps:.0%} of the "
        "slowest backend's",
        f"- the proxy's server CPU per request at c={high}: {figures[proxy, high].cpu_us_per_request:,.0f} µs, "
        f"{figures[proxy, high].cpu_us_per_request / figures[slowest, high].cpu_us_per_request:.1f}x a backend's",
        *verdict_lines(
            f"the proxy's p50 at c={low} {proxy_p50:.2f} ms",
            f"{ratio:.2f}x the slowest backend's ({slowest_name}: {slowest_p50:.2f} ms), {added:+.2f} ms",
            target,
            met,
        ),
        "",
    ]
    return "\n".join(lines)
