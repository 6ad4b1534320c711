"""`python -m mlpatterns.bench PATTERN_DIR`: a serving pattern's /predict beside its two floors, in one run.

1. /predict of the pattern, started by the local runner on free ports, under wrk at 1 and 32 connections;
2. the echo floor: a minimal FastAPI JSON echo on the same server stack and worker count, same load;
3. the model floor: the same ONNX model called in this process (one row; a 1000-row batch).
Prints a table and the ratios that matter, and writes them as markdown to build/bench/<pattern>.md.
"""

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import orjson

from mlpatterns.bench.echo import echo_server
from mlpatterns.bench.wrk import Load, WrkMissing, ensure_wrk, run_wrk
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.runner.run import REPO_ROOT, RunnerError, run_pattern
from mlpatterns.settings import IRIS_SAMPLE, ServingSettings

CONCURRENCIES = (1, 32)


def load_both(url: str, body: bytes, seconds: float, warmup: float) -> dict[int, Load]:
    run_wrk(url, body, max(CONCURRENCIES), warmup)  # warm-up: connections, caches, lazy imports
    return {c: run_wrk(url, body, c, seconds) for c in CONCURRENCIES}


def model_floor(model_path: Path, sample: list, seconds: float) -> tuple[float, float]:
    """onnxruntime's own run() on the served model, as the predictor sets it up: (1-row calls/s, batch rows/s)."""
    predictor = OnnxPredictor(REPO_ROOT / model_path).load()
    outputs = [predictor.score_output] + ([predictor.class_output] if predictor.class_output else [])
    one_row = predictor.check(sample[:1])
    batch = np.repeat(one_row, 1000, axis=0)

    def rate(array: np.ndarray) -> float:
        feed = {predictor.input_name: array}
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(100):
                predictor.session.run(outputs, feed)
            calls += 100
        return calls / elapsed

    rate(one_row)  # warm-up
    return rate(one_row), rate(batch) * len(batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlpatterns.bench", description=__doc__.splitlines()[0])
    parser.add_argument("pattern", type=Path, help="a serving pattern directory")
    parser.add_argument("--service", default="web", help="the compose service that serves /predict (default: web)")
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measured run (default: 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="before each server's runs (default: 2)")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 120 or not 0 <= args.warmup <= 30:
        parser.error("--seconds must be within 1..120 and --warmup within 0..30")
    try:
        ensure_wrk()
    except WrkMissing as error:
        print(error, file=sys.stderr)
        return 2
    name = args.pattern.resolve().name

    print(f"{name}: starting the pattern...", flush=True)
    try:
        with run_pattern(args.pattern, free_ports=True) as run:
            service = run.running[args.service].service
            base = run.url(args.service)
            sample = httpx.get(base + "/metadata", timeout=5).json().get("data_sample", IRIS_SAMPLE)
            body = orjson.dumps({"data": sample[:1]})
            print(f"{name}: loading POST {args.path} with {body.decode()}", flush=True)
            pattern = load_both(base + args.path, body, args.seconds, args.warmup)
    except RunnerError as error:
        print(error, file=sys.stderr)
        return 1
    workers = service.environment.get("WORKERS")
    print(f"echo floor: {workers or 'default'} workers...", flush=True)
    with echo_server(workers) as url:
        echo = load_both(url, body, args.seconds, args.warmup)
    model_path = Path(service.environment.get("MODEL_PATH") or ServingSettings.model_fields["model_path"].default)
    print(f"model floor: {model_path} in process...", flush=True)
    calls_per_s, rows_per_s = model_floor(model_path, sample, min(args.seconds, 3.0))

    failed = [(what, c, load) for what, loads in (("pattern", pattern), ("echo", echo)) for c, load in loads.items()
              if load.status_errors or load.socket_errors]
    report = render(args, name, workers, body, pattern, echo, calls_per_s, rows_per_s)
    print("\n" + report)
    out = REPO_ROOT / "build" / "bench" / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"written to {out.relative_to(REPO_ROOT)}")
    for what, c, load in failed:
        print(f"ERROR: {what} at c={c}: {load.status_errors} non-2xx answers, {load.socket_errors} socket errors",
              file=sys.stderr)
    return 1 if failed else 0


def render(args, name: str, workers: str | None, body: bytes, pattern: dict[int, Load], echo: dict[int, Load],
           calls_per_s: float, rows_per_s: float) -> str:
    command = (f"make bench P={args.pattern}" if os.environ.get("MAKELEVEL")
               else shlex.join(["python", "-m", "mlpatterns.bench", *sys.argv[1:]]))
    wrk_version = subprocess.run([ensure_wrk(), "-v"], capture_output=True, text=True).stdout.split(" [")[0]
    rows = []
    for label, loads in ((f"POST {args.path} ({name})", pattern), ("FastAPI JSON echo (floor)", echo)):
        for c, load in loads.items():
            errors = load.status_errors + load.socket_errors
            rows.append(f"| {label} | {c} | {load.rps:,.0f} req/s | {load.p50_ms:.2f} ms | {load.p99_ms:.2f} ms | {errors} |")
    rows.append(f"| onnxruntime in process, 1 row (floor) | 1 | {calls_per_s:,.0f} calls/s | "
                f"{1e6 / calls_per_s:.1f} µs/call | | |")
    rows.append(f"| onnxruntime in process, 1000-row batch (floor) | 1 | {rows_per_s:,.0f} rows/s | | | |")
    high, low = max(CONCURRENCIES), min(CONCURRENCIES)
    return "\n".join([
        f"## Benchmark: {name}",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), {_cpu_model()}, "
        f"Linux {platform.release()}, Python {platform.python_version()}",
        f"- load: {wrk_version}, 1 thread, {args.seconds:g} s per run after a {args.warmup:g} s warm-up, loopback, "
        f"body `{body.decode()}`",
        f"- server: gunicorn + uvicorn workers (mlpatterns.serving.gunicorn_conf), {workers or 'default'} workers",
        "",
        "| what | concurrency | throughput | p50 | p99 | errors |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"- {args.path} throughput at c={high}: {100 * pattern[high].rps / echo[high].rps:.0f}% of the echo floor's",
        f"- {args.path} p50 at c={low}: {pattern[low].p50_ms / echo[low].p50_ms:.2f}x the echo floor's",
        "",
    ])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()
