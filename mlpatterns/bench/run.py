"""`python -m mlpatterns.bench PATTERN_DIR`: a serving pattern's /predict beside its floors, in one run.

1. /predict of the pattern, started by the local runner on free ports, under wrk at 1 and 32 connections;
2. the echo floor: a minimal FastAPI JSON echo on the same server stack and worker count, same load;
3. the bare floor, for a pattern whose body is rows of numbers: the same model behind Starlette, orjson and
   onnxruntime alone (bare.py), same server stack and worker count, same body;
4. the model floor: the same ONNX model called in this process (one row; a 1000-row batch).
`--rows N` sends N copies of the sample item per request (a batch) instead of one.
What to load comes from the pattern's compose file, a top-level `x-bench` (every key optional):
    x-bench: {service: proxy, path: /predict/label, body: {"data": [...]}, model: models/cifar10/model.onnx}
    x-bench: {service: serving, path: "/v1/models/digits:predict", key: instances, sample: digit}
    x-bench: {min_share_of_echo: 0.9}  # the performance issue's target: req/s at c=32 at least 90% of the echo's
By default: the service `web`, POST /predict, `{"data": [item]}` with the first item of its /metadata sample
(`sample: digit`: a shipped digit image instead; `key`: another name than "data"), the service's MODEL_PATH.
Image items (base64 strings) are decoded once before the model floor, which measures the model alone.
The two servers are loaded in turn, round after round, so a slow spell of a shared machine hits both alike;
each figure is the median of the rounds. Prints a table and the ratios that matter, and writes them as
markdown to build/bench/<pattern>.md.
"""

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import orjson
import yaml

from mlpatterns.bench.cpu import CpuMeter, CpuShare
from mlpatterns.bench.verdict import verdict_lines
from mlpatterns.bench.wrk import Load, WrkMissing, ensure_wrk, run_wrk
from mlpatterns.images import ImagePreprocessor, sample_digits
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.runner.run import REPO_ROOT, RunnerError, run_pattern, stop_on_signals
from mlpatterns.settings import IRIS_SAMPLE, ModelServingSettings

ECHO = Path(__file__).parent  # its docker-compose.yml: the echo floor as a one-service "pattern"
BARE = Path(__file__).parent / "bare_floor"  # the bare floor, likewise
CONCURRENCIES = (1, 32)
BATCH_ROWS = 1000


@dataclass
class Target:
    label: str
    url: str
    pgid: int  # the server's process group, for its CPU time
    headers: dict[str, str] | None = None  # sent on every request (a routing header)
    body: bytes | None = None  # its own request body, where servers take different formats (else measure's)


@dataclass
class Figures:
    """One target at one concurrency: medians over the rounds."""

    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    errors: int  # over every round: non-2xx answers and socket errors
    other_cpu: float  # the largest share of the machine used by other processes during a round


def measure(
    targets: list[Target],
    body: bytes | None,
    seconds: float,
    warmup: float,
    rounds: int,
    concurrencies: tuple[int, ...] = CONCURRENCIES,
) -> dict:
    """Load each target in turn at each concurrency, `rounds` times: {(label, connections): Figures}.
    Each target is sent its own body if it has one, else `body`."""
    for target in targets:
        if warmup:  # connections, caches, lazy imports
            run_wrk(target.url, target.body or body, max(concurrencies), warmup, headers=target.headers)
    runs: dict[tuple[str, int], list] = {(t.label, c): [] for t in targets for c in concurrencies}
    for round_number in range(1, rounds + 1):
        for connections in concurrencies:
            for target in targets:
                with CpuMeter(target.pgid) as meter:
                    load = run_wrk(target.url, target.body or body, connections, seconds, headers=target.headers)
                if not load.requests:  # a figure of nothing: say so rather than divide by it
                    raise RunnerError(
                        f"{target.label}: no answer within {seconds:g} s at c={connections} (a cold or overloaded "
                        "server: run again with a longer --warmup or --seconds)"
                    )
                runs[target.label, connections].append((load, meter.result))
                print(
                    f"  round {round_number}/{rounds} c={connections:<3} {target.label}: {load.rps:,.0f} req/s, "
                    f"p50 {load.p50_ms:.2f} ms, other processes {meter.result.other_fraction:.0%}",
                    flush=True,
                )
    return {key: summarize(done) for key, done in runs.items()}


def summarize(done: list[tuple[Load, CpuShare]]) -> Figures:
    return Figures(
        rps=statistics.median(load.rps for load, _ in done),
        p50_ms=statistics.median(load.p50_ms for load, _ in done),
        p99_ms=statistics.median(load.p99_ms for load, _ in done),
        cpu_us_per_request=statistics.median(cpu.server_seconds * 1e6 / max(1, load.requests) for load, cpu in done),
        errors=sum(load.status_errors + load.socket_errors for load, _ in done),
        other_cpu=max(cpu.other_fraction for _, cpu in done),
    )


def bench_spec(pattern: Path) -> dict:
    """The pattern's `x-bench` (module docstring), checked: a misspelt key stops the bench instead of being ignored."""
    spec = yaml.safe_load((pattern / "docker-compose.yml").read_text()).get("x-bench") or {}
    known = ("service", "path", "body", "key", "sample", "model", "min_share_of_echo")
    unknown = set(spec) - set(known)
    if unknown:
        raise RunnerError(f"{pattern}: x-bench has unknown keys {sorted(unknown)} ({', '.join(known)})")
    if spec.get("sample", "metadata") not in ("metadata", "digit"):
        raise RunnerError(f"{pattern}: x-bench sample is metadata or digit, not {spec['sample']!r}")
    return spec


def model_floor(model_path: Path, sample: list, seconds: float) -> tuple[float, float]:
    """onnxruntime's own run() on the served model, set up as the predictor does: (1-row calls/s, batch rows/s)."""
    predictor = OnnxPredictor(REPO_ROOT / model_path).load()
    outputs = [predictor.score_output] + ([predictor.class_output] if predictor.class_output else [])
    if isinstance(sample[0], str):  # base64 images: decoded here, so the floor is the model alone
        sample = ImagePreprocessor(shape=tuple(predictor.feature_shape))(sample[:1])
    one_row = predictor.check(sample[:1])
    batch = np.repeat(one_row, BATCH_ROWS, axis=0)

    def calls_per_second(array: np.ndarray) -> float:
        feed = {predictor.input_name: array}
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(10):
                predictor.session.run(outputs, feed)
            calls += 10
        return calls / elapsed

    calls_per_second(one_row)  # warm-up
    return calls_per_second(one_row), calls_per_second(batch) * BATCH_ROWS


def bench_dir() -> Path:
    """Where reports go: build/bench/, or MLPATTERNS_BENCH_DIR (the tests' own, leaving a user's reports alone)."""
    return Path(os.environ.get("MLPATTERNS_BENCH_DIR") or REPO_ROOT / "build" / "bench")


def save_report(name: str, report: str) -> Path:
    """Print a bench's report and write it to build/bench/<name>.md (every bench command's last step)."""
    print("\n" + report)
    out = bench_dir() / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"written to {out}")
    return out


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--seconds, --rounds and --warmup of `measure`, for this command and a pattern's own bench.py."""
    parser.add_argument("--seconds", type=float, default=5.0, help="per run (default: 5)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server and concurrency (default: 3)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per server before the runs (default: 2)")


def parse_run_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if not (1 <= args.seconds <= 60 and 1 <= args.rounds <= 10 and 0 <= args.warmup <= 30):
        parser.error("--seconds must be within 1..60, --rounds within 1..10, --warmup within 0..30")
    return args


def bench_command(
    doc: str,
    argv: list[str] | None,
    bench: Callable[[argparse.Namespace], int],
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """The frame of a pattern's own bench.py, whose `main` is `return bench_command(__doc__, argv, bench)`: the
    options of `measure` (--seconds, --rounds, --warmup), signals that stop every server it started, and wrk;
    `bench(args)` starts what it measures and returns the exit status. Without wrk it exits 2, with a pattern that
    does not start 1. `options(parser)` adds a command's own options."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if options is not None:
        options(parser)
    add_run_options(parser)
    args = parse_run_options(parser, argv)
    stop_on_signals()
    try:
        ensure_wrk()
        return bench(args)
    except (WrkMissing, RunnerError) as error:
        print(error, file=sys.stderr)
        return 2 if isinstance(error, WrkMissing) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlpatterns.bench", description=__doc__.splitlines()[0])
    parser.add_argument("pattern", type=Path, help="a serving pattern directory")
    parser.add_argument("--service", help="the compose service that serves the path (default: x-bench's, or web)")
    parser.add_argument("--path", help="the path to POST to (default: x-bench's, or /predict)")
    parser.add_argument("--rows", type=int, default=1, help="items per request: a batch (default: 1)")
    add_run_options(parser)
    args = parse_run_options(parser, argv)
    try:
        ensure_wrk()
    except WrkMissing as error:
        print(error, file=sys.stderr)
        return 2
    stop_on_signals()
    name = args.pattern.resolve().name

    print(f"{name}: starting the pattern and the echo floor...", flush=True)
    try:
        spec = bench_spec(args.pattern)
        args.service = args.service or spec.get("service", "web")
        args.path = args.path or spec.get("path", "/predict")
        with run_pattern(args.pattern, free_ports=True) as run:
            if args.service not in run.running:
                raise RunnerError(f"{name} has no service {args.service!r} (it has {', '.join(run.running)})")
            running = run.running[args.service]
            base = run.url(args.service)
            key = spec.get("key", "data")
            if "body" in spec:
                sample = spec["body"][key]
                content = spec["body"]
            else:
                if spec.get("sample") == "digit":
                    sample = [sample_digits()["0"]]
                else:
                    sample = httpx.get(base + "/metadata", timeout=5).json().get("data_sample", IRIS_SAMPLE)
                content = {key: sample[:1]}
            if args.rows > 1:
                content = {**content, key: sample[:1] * args.rows}
            body = orjson.dumps(content)
            environment = running.service.environment
            workers = environment.get("WORKERS")
            model_path = spec.get("model") or ModelServingSettings.model_validate(environment).model_path
            # The bare floor takes `{"data": rows of numbers}` and answers /predict's scores.
            bare = key == "data" and not isinstance(sample[0], str) and args.path == "/predict"
            floors = {"echo": {"WORKERS": workers}} if workers else {}
            with ExitStack() as floors_running:
                floor = floors_running.enter_context(run_pattern(ECHO, overrides=floors or None))
                # Runner processes lead their own sessions: a pid is its process group id.
                targets = [
                    Target(f"POST {args.path} ({name})", base + args.path, running.process.pid),
                    Target("FastAPI JSON echo (floor)", floor.url("echo") + "/echo", floor.running["echo"].process.pid),
                ]
                if bare:
                    overrides = {"bare": {"MODEL_PATH": str(model_path), **({"WORKERS": workers} if workers else {})}}
                    bare_run = floors_running.enter_context(run_pattern(BARE, overrides=overrides))
                    pid = bare_run.running["bare"].process.pid
                    label = "bare Starlette + orjson + onnxruntime (floor)"
                    targets.append(Target(label, bare_run.url("bare") + "/predict", pid))
                print(f"loading each with {shown(body)}, {args.rounds} rounds of {args.seconds:g} s", flush=True)
                figures = measure(targets, body, args.seconds, args.warmup, args.rounds)
    except RunnerError as error:
        print(error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the servers are stopped", file=sys.stderr)
        return 130
    print(f"model floor: {model_path} in process...", flush=True)
    calls_per_s, rows_per_s = model_floor(Path(model_path), sample, min(args.seconds, 3.0))

    labels = [t.label for t in targets]
    report = render(args, name, workers, body, labels, figures, calls_per_s, rows_per_s, spec.get("min_share_of_echo"))
    save_report(name, report)
    failed = {key: f.errors for key, f in figures.items() if f.errors}
    for (label, connections), errors in failed.items():
        print(f"ERROR: {label} at c={connections}: {errors} non-2xx answers or socket errors", file=sys.stderr)
    return 1 if failed else 0


def render(
    args,
    name: str,
    workers: str | None,
    body: bytes,
    labels: list[str],
    figures: dict,
    calls_per_s: float,
    rows_per_s: float,
    min_share_of_echo: float | None = None,
) -> str:
    command = (
        f"make bench P={args.pattern}"
        if os.environ.get("MAKELEVEL")
        else shlex.join(["python", "-m", "mlpatterns.bench", *sys.argv[1:]])
    )
    wrk_version = subprocess.run([ensure_wrk(), "-v"], capture_output=True, text=True).stdout.split(" [")[0]
    pattern, echo, *bare = labels
    low, high = min(CONCURRENCIES), max(CONCURRENCIES)
    throughput = figures[pattern, high].rps / figures[echo, high].rps
    latency = figures[pattern, low].p50_ms / figures[echo, low].p50_ms
    cpu = figures[pattern, high].cpu_us_per_request / figures[echo, high].cpu_us_per_request
    other = max(f.other_cpu for f in figures.values())
    lines = [
        f"## Benchmark: {name}",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: nproc {len(os.sched_getaffinity(0))}, {_cpu_model()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- server: gunicorn + uvicorn workers (mlpatterns.serving.gunicorn_conf), {workers or 'default'} workers",
        f"- load: {wrk_version}, 1 thread, loopback, body `{shown(body)}`; each figure is the median of "
        f"{args.rounds} runs of {args.seconds:g} s, the servers loaded in turn, "
        f"after a {args.warmup:g} s warm-up",
        f"- other processes used up to {other:.0%} of the machine's CPU during a run"
        + (" (WARNING: a busy machine; run again when it is quiet)" if other > 0.10 else ""),
        "",
        *figures_table(labels, figures),
        "",
        "| model floor, in process | throughput | per call |",
        "|---|---:|---:|",
        f"| onnxruntime, 1 row | {calls_per_s:,.0f} calls/s | {1e6 / calls_per_s:,.1f} µs |",
        f"| onnxruntime, {BATCH_ROWS}-row batch | {rows_per_s:,.0f} rows/s | {1e6 * BATCH_ROWS / rows_per_s:,.0f} µs |",
        "",
        f"- {args.path} req/s at c={high}: {throughput:.0%} of the echo floor's",
        f"- {args.path} p50 at c={low}: {latency:.2f}x the echo floor's",
        f"- {args.path} server CPU per request at c={high}: {cpu:.2f}x the echo floor's",
    ]
    if bare:
        ours, floor = figures[pattern, high], figures[bare[0], high]
        lines += [
            f"- {args.path} req/s at c={high}: {ours.rps / floor.rps:.0%} of the bare floor's"
            + (f" ({ours.rps * args.rows:,.0f} rows/s against {floor.rps * args.rows:,.0f})" if args.rows > 1 else ""),
            f"- {args.path} p99 at c={high}: {ours.p99_ms / floor.p99_ms:.2f}x the bare floor's",
        ]
    lines += [
        *verdict_lines(
            f"{args.path} at c={high} {figures[pattern, high].rps:,.0f} req/s",
            f"{throughput:.0%} of the echo floor's",
            None if min_share_of_echo is None else f"at least {min_share_of_echo:.0%} of the echo's req/s at c={high}",
            None if min_share_of_echo is None else throughput >= min_share_of_echo,
        ),
        "",
    ]
    return "\n".join(lines)


def figures_table(labels: list[str], figures: dict, concurrencies: tuple[int, ...] = CONCURRENCIES) -> list[str]:
    """`measure`'s figures as the lines of a markdown table: one row per label and concurrency."""
    return [
        "| what | connections | req/s | p50 | p99 | server CPU per request | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {label} | {c} | {f.rps:,.0f} | {f.p50_ms:.2f} ms | {f.p99_ms:.2f} ms | {f.cpu_us_per_request:,.0f} µs "
            f"| {f.errors} |"
            for label in labels
            for c in concurrencies
            for f in [figures[label, c]]
        ),
    ]


def shown(body: bytes, limit: int = 100) -> str:
    """The body as the report prints it: an image's base64 is cut short."""
    text = body.decode()
    return text if len(text) <= limit else f"{text[:limit]}... ({len(body):,} bytes)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()
