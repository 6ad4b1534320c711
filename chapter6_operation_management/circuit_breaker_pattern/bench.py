"""What the breaker costs, and how fast an open circuit answers: `make bench P=chapter6_operation_management/
circuit_breaker_pattern` (`python -m chapter6_operation_management.circuit_breaker_pattern.bench`).

Two runs of the pattern with the compose numbers: in one the backends answer (the circuit closed); in the other
all three are stopped (SIGSTOP of their process groups) until the breaker has taken them out, so that every
prediction is the fallback (the circuit open). wrk posts one iris row, in turn, through the closed breaker, to
one backend directly, through the open breaker, and to the FastAPI echo floor, at 1 and 32 connections
(mlpatterns.bench.run.measure); every answer of the open breaker must be the fallback. Writes
build/bench/circuit_breaker_pattern.md.
"""

import argparse
import os
import signal
import sys
import time
from contextlib import contextmanager
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
from mlpatterns.bench.verdict import proxy_verdict
from mlpatterns.runner.run import RunnerError, run_pattern

PATTERN = Path(__file__).parent
BODY = orjson.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]})
BACKENDS = ("iris_a", "iris_b", "iris_c")


@contextmanager
def circuit_open(run, timeout: float = 60.0):
    """Every backend's processes stopped until the breaker's checks have taken all three out."""
    groups = [run.processes(name)[0].pid for name in BACKENDS]
    for group in groups:
        os.killpg(group, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + timeout
        while not all_down(run.url("breaker")):
            if time.monotonic() > deadline:
                raise RunnerError(f"the breaker did not take the stopped backends out within {timeout:.0f} s")
            time.sleep(0.5)
        yield
    finally:
        for group in groups:
            os.killpg(group, signal.SIGCONT)


def all_down(url: str) -> bool:
    metrics = httpx.get(url + "/proxy/metrics", timeout=10).text
    return all(f'haproxy_server_status{{proxy="iris",server="{s}",state="DOWN"}} 1' in metrics for s in "abc")


def main(argv: list[str] | None = None) -> int:
    return bench_command(__doc__, argv, bench)


def bench(args: argparse.Namespace) -> int:
    with run_pattern(PATTERN) as closed, run_pattern(PATTERN) as opened, circuit_open(opened):
        answer = httpx.post(opened.url("breaker") + "/predict", content=BODY, timeout=10)
        if answer.headers.get("x-fallback") != "circuit open":
            raise RunnerError(f"the open breaker answered {answer.status_code} {answer.text}")
        workers = closed.running["iris_a"].service.environment["WORKERS"]
        with run_pattern(ECHO, overrides={"echo": {"WORKERS": workers}}) as echo:
            targets = [
                Target("POST /predict, breaker closed", closed.url("breaker") + "/predict", pid(closed, "breaker")),
                Target("POST /predict, one backend directly", closed.url("iris_a") + "/predict", pid(closed, "iris_a")),
                Target(
                    "POST /predict, breaker open (fallback)",
                    opened.url("breaker") + "/predict",
                    pid(opened, "breaker"),
                ),
                Target("FastAPI JSON echo (floor)", echo.url("echo") + "/echo", pid(echo, "echo")),
            ]
            figures = measure(targets, BODY, args.seconds, args.warmup, args.rounds)
        fallbacks = httpx.get(opened.url("breaker") + "/proxy/metrics", timeout=10).text
    lines = [
        f"## Benchmark: {PATTERN.name}",
        "",
        f"- command: `make bench P=chapter6_operation_management/circuit_breaker_pattern`; {workers} gunicorn workers"
        f" per backend and for the echo; wrk, body `{BODY.decode()}`; medians of {args.rounds} runs of"
        f" {args.seconds:g} s",
        f"- other processes used up to {max(f.other_cpu for f in figures.values()):.0%} of the machine's CPU",
        "- server CPU: of the breaker's HAProxy alone on its rows (not its backends'), of the gunicorn workers on"
        " the others",
        "",
        *figures_table([target.label for target in targets], figures),
    ]
    closed_label, direct_label, open_label, _ = (target.label for target in targets)
    high = max(CONCURRENCIES)
    lines += [
        "",
        f"- p50 at c=1: breaker closed {figures[closed_label, 1].p50_ms / figures[direct_label, 1].p50_ms:.2f}x one"
        f" backend directly; breaker open {figures[open_label, 1].p50_ms / figures[closed_label, 1].p50_ms:.2f}x"
        " breaker closed",
        f"- req/s at c={high}: breaker closed (3 backends)"
        f" {figures[closed_label, high].rps / figures[direct_label, high].rps:.2f}x one backend directly",
        *proxy_verdict(
            figures[closed_label, 1].p50_ms, figures[direct_label, 1].p50_ms, "breaker closed", "one backend directly"
        ),
        "",
    ]
    save_report(PATTERN.name, "\n".join(lines))
    served = sum(
        float(line.rsplit(" ", 1)[1])
        for line in fallbacks.splitlines()
        if line.startswith('haproxy_server_http_responses_total{proxy="iris"')
    )
    if served or any(f.errors for f in figures.values()):
        print(f"ERROR: the load had errors, or the open breaker sent {served:.0f} requests on", file=sys.stderr)
        return 1
    return 0


def pid(run, name: str) -> int:
    return run.processes(name)[0].pid


if __name__ == "__main__":
    sys.exit(main())
