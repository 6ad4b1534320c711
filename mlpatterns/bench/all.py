"""`make bench` with no P: every serving pattern's bench in turn, then one summary at build/bench/all.md.

    python -m mlpatterns.bench.all [--seconds S] [--rounds N] [--warmup W] [--only DIR ...]
    python -m mlpatterns.bench.all --tiny     # each bench at its smallest setting: does it run, does it report?

Each pattern's bench is the command `make bench P=<dir>` runs (its own bench.py, or the generic one of
mlpatterns/bench/run.py), in its own process, with the options given here passed on (without them each bench keeps
its own defaults). A bench that fails is reported and the next one runs; the exit status is 0 only when every bench
exited 0 and wrote its report with its key figure and target (mlpatterns/bench/verdict.py). The summary has one
row per pattern: its key figure beside its floor, the performance issue's target and whether it is met, the exit
status and the time the bench took, under the load average of the machine before and after.
"""

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mlpatterns.bench.run import bench_dir
from mlpatterns.bench.verdict import read_verdict
from mlpatterns.runner.run import REPO_ROOT

# Every pattern with an HTTP service that predicts or answers clients, in the book's order.
BENCHED = (
    "chapter2_training/cifar10",
    "chapter3_release_patterns/model_in_image_pattern",
    "chapter3_release_patterns/model_load_pattern",
    "chapter4_serving_patterns/web_single_pattern",
    "chapter4_serving_patterns/synchronous_pattern",
    "chapter4_serving_patterns/asynchronous_pattern",
    "chapter4_serving_patterns/batch_pattern",
    "chapter4_serving_patterns/prep_pred_pattern",
    "chapter4_serving_patterns/horizontal_microservice_pattern",
    "chapter4_serving_patterns/sync_async_pattern",
    "chapter4_serving_patterns/prediction_cache_pattern",
    "chapter4_serving_patterns/data_cache_pattern",
    "chapter4_serving_patterns/template_pattern",
    "chapter5_operations/prediction_log_pattern",
    "chapter5_operations/prediction_monitoring_pattern",
    "chapter6_operation_management/load_test_pattern",
    "chapter6_operation_management/online_ab_pattern",
    "chapter6_operation_management/shadow_ab_pattern",
    "chapter6_operation_management/parameter_based_pattern",
    "chapter6_operation_management/condition_based_pattern",
    "chapter6_operation_management/circuit_breaker_pattern",
)
# The patterns with a compose file and no bench, and why.
NOT_BENCHED = {
    "chapter2_training/model_db": "the model registry: CRUD over PostgreSQL, no model to serve beside a floor",
    "chapter4_serving_patterns/edge_ai_pattern": "no server: the edge client's own report (make demo) gives each "
    "model's latency on the device",
}


# --tiny: one round of one second after one of warm-up (a cold server on a busy machine may answer nothing in its
# first second), and the smallest work of the benches that size their own.
TINY = ["--seconds=1", "--rounds=1", "--warmup=1"]
TINY_EXTRA = {
    "chapter4_serving_patterns/batch_pattern": ["--rows=5000"],
    "chapter4_serving_patterns/asynchronous_pattern": ["--jobs=200"],
    "chapter6_operation_management/load_test_pattern": ["--book-seconds=2"],
}


def bench_command(pattern: str, options: list[str]) -> list[str]:
    """What `make bench P=<pattern>` runs: the pattern's own bench.py, else the generic bench."""
    if (REPO_ROOT / pattern / "bench.py").exists():
        return [sys.executable, "-m", f"{pattern.replace('/', '.')}.bench", *options]
    return [sys.executable, "-m", "mlpatterns.bench", pattern, *options]


def report_path(pattern: str) -> Path:
    return bench_dir() / f"{Path(pattern).name}.md"


@dataclass
class Outcome:
    pattern: str
    status: int
    seconds: float
    key_figure: str = "(no report)"
    target: str = ""

    @property
    def passed(self) -> bool:
        return self.status == 0 and self.target != ""


def run_one(pattern: str, options: list[str]) -> Outcome:
    report = report_path(pattern)
    report.unlink(missing_ok=True)  # a report left by an earlier run must not pass for this one's
    start = time.monotonic()
    status = subprocess.run(bench_command(pattern, options), cwd=REPO_ROOT, stdin=subprocess.DEVNULL).returncode
    outcome = Outcome(pattern, status, time.monotonic() - start)
    if report.exists() and (verdict := read_verdict(report.read_text())):
        outcome.key_figure, outcome.target = verdict
    elif report.exists():
        outcome.key_figure = "(the report has no key figure or target line)"
    return outcome


def summary(command: str, outcomes: list[Outcome], load_before: str, load_after: str) -> str:
    passed = sum(o.passed for o in outcomes)
    lines = [
        "## Benchmarks: every serving pattern",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.now().astimezone().isoformat(timespec='seconds')}; machine: nproc "
        f"{len(os.sched_getaffinity(0))}, Linux {platform.release()}, Python {platform.python_version()}",
        f"- load average (1, 5, 15 min) before: {load_before}; after: {load_after}. Figures move with the machine's "
        "load; the ratios, each taken within one bench's run, move less",
        f"- {passed} of {len(outcomes)} benches ran and wrote their report; each pattern's full table is "
        "build/bench/<pattern>.md",
        "",
        "| pattern | key figure, beside its floor | target | exit | seconds |",
        "|---|---|---|---:|---:|",
        *(
            f"| {Path(o.pattern).name} | {o.key_figure} | {o.target or '-'} | {o.status} | {o.seconds:.0f} |"
            for o in outcomes
        ),
        "",
    ]
    return "\n".join(lines)


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlpatterns.bench.all", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="per run, passed to every bench (default: each bench's own)")
    parser.add_argument("--rounds", type=int, help="runs per server and concurrency, passed to every bench")
    parser.add_argument("--warmup", type=float, help="warm-up seconds, passed to every bench")
    parser.add_argument("--tiny", action="store_true", help="each bench at its smallest setting (the tests')")
    parser.add_argument("--only", nargs="+", metavar="DIR", help="these pattern directories only (of the list)")
    args = parser.parse_args(argv)
    patterns = list(BENCHED)
    if args.only:
        unknown = [p for p in args.only if p.rstrip("/") not in BENCHED]
        if unknown:
            parser.error(f"not a benched pattern: {', '.join(unknown)} (the list is BENCHED in {__file__})")
        patterns = [p for p in BENCHED if p in {o.rstrip("/") for o in args.only}]
    options = [
        f"--{name}={value:g}" for name in ("seconds", "rounds", "warmup") if (value := getattr(args, name)) is not None
    ]
    if args.tiny and options:
        parser.error("--tiny sets --seconds, --rounds and --warmup itself")
    given = shlex.join(argv if argv is not None else sys.argv[1:])
    if os.environ.get("MAKELEVEL"):
        command = f"make bench BENCH_ARGS={shlex.quote(given)}" if given else "make bench"
    else:
        command = f"python -m mlpatterns.bench.all {given}".strip()
    load_before, outcomes = load_average(), []
    for number, pattern in enumerate(patterns, 1):
        given = TINY + TINY_EXTRA.get(pattern, []) if args.tiny else options
        print(f"\n=== [{number}/{len(patterns)}] {pattern}: {shlex.join(bench_command(pattern, given))}", flush=True)
        outcome = run_one(pattern, given)
        outcomes.append(outcome)
        state = "ok" if outcome.passed else f"FAILED (exit {outcome.status})"
        print(f"=== [{number}/{len(patterns)}] {pattern}: {state} in {outcome.seconds:.0f} s", flush=True)
    report = summary(command, outcomes, load_before, load_average())
    out = bench_dir() / "all.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print("\n" + report + f"\nwritten to {out}")
    failed = [o.pattern for o in outcomes if not o.passed]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
