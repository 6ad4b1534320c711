"""`make bench P=chapter4_serving_patterns/batch_pattern`: the job's rows/s end to end beside onnxruntime's own.

In one run, on a private PostgreSQL (started here from the machine's binaries, removed at the end):
1. migrate, and seed --rows rows (default 100,000: the 150 iris flowers and their jittered copies, see seed.py);
2. for 1 job and for 3 concurrent jobs (`job --once` processes, CHUNK_SIZE=--chunk), each --rounds times: every
   prediction is reset, the table vacuumed, the jobs started together; rows/s end to end is the rows over the time
   from the first run's start to the last run's end as the runs table records them (taking, predicting and
   writing back every chunk, committed), after each job's process start and model load;
3. the floor: onnxruntime's own run() on the same model, set up as the job's predictor is, on chunks of the same
   size of the same rows, in this process, for --seconds right before every round: each round's share of the floor
   compares two figures taken under the same load (on a shared machine the floor alone moved 2x within one run);
4. CPU time per row, which hardly moves with what else the machine runs: --rounds runs of one job in this process
   (job.run_batch), the job's own CPU and its PostgreSQL backend's (from /proc), beside the floor's CPU per row.
With --warmup above 0, one untimed round of one job first (caches, PostgreSQL's buffers). Prints a markdown table
(medians of the rounds and of their shares) and writes it to build/bench/batch_pattern.md. The performance issue's
target: one job, as the pattern runs it, at least 50% of the floor's rows/s end to end.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime

import numpy as np
import psycopg2

from mlpatterns.bench.cpu import process_cpu_seconds
from mlpatterns.bench.run import save_report
from mlpatterns.bench.verdict import verdict_lines
from mlpatterns.runner.backing import PostgresServer, free_port
from mlpatterns.runner.run import REPO_ROOT

PACKAGE = "chapter4_serving_patterns.batch_pattern"
MODEL = REPO_ROOT / "models" / "iris_svc" / "model.onnx"
TARGET = 0.5  # one job end to end, as a share of onnxruntime's rows/s
RESET = (
    "UPDATE items SET prediction = NULL, label = NULL, predicted_by = NULL, predicted_datetime = NULL,"
    " prediction_count = 0; DELETE FROM batch_runs"
)


def command(module: str, *args: str, env: dict) -> list[str]:
    return [sys.executable, "-m", f"{PACKAGE}.{module}", *args]


def reset(url: str):
    """Every row pending again, no runs, the table vacuumed: an autocommit connection to check the round with."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(RESET)
        cursor.execute("VACUUM ANALYZE items")
    return connection


def check_predicted_once(connection, rows: int) -> float:
    """Stop the bench unless every row was predicted exactly once; the seconds from the first run's start to the
    last run's end, as the runs table records them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM max(finished_datetime) - min(started_datetime)), sum(rows_predicted),"
            " (SELECT count(*) FROM items WHERE prediction_count <> 1) FROM batch_runs"
        )
        span, predicted, not_once = cursor.fetchone()
    connection.close()
    if predicted != rows or not_once:
        raise SystemExit(f"{predicted} rows predicted of {rows}, {not_once} rows not predicted exactly once")
    return float(span)


def one_round(url: str, env: dict, jobs: int, rows: int) -> tuple[float, float]:
    """(rows/s from the first run's start to the last run's end, rows/s of the wall clock with process starts)."""
    connection = reset(url)
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            command("job", "--once", env=env),
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(jobs)
    ]
    codes = [process.wait() for process in processes]
    wall = time.perf_counter() - start
    if any(codes):
        connection.close()
        raise SystemExit(f"a job failed: exit codes {codes}")
    return rows / check_predicted_once(connection, rows), rows / wall


def cpu_round(url: str, rows: int, plane) -> tuple[float, float]:
    """One run of the job in this process: (the job's CPU µs per row, its PostgreSQL backend's CPU µs per row)."""
    from chapter4_serving_patterns.batch_pattern.job import run_batch
    from mlpatterns.db import create_db_engine

    connection = reset(url)
    # One pooled connection, so the run's statements all go to the backend whose CPU is read here.
    engine = create_db_engine(url.replace("postgresql:", "postgresql+psycopg2:"), pool_size=1, max_overflow=0)
    try:
        with engine.connect() as probe:
            backend = probe.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        job_cpu, server_cpu = time.process_time(), process_cpu_seconds(backend)
        run_batch(engine, plane, plane.max_items, "bench-cpu")
        job_cpu, server_cpu = time.process_time() - job_cpu, process_cpu_seconds(backend) - server_cpu
    finally:
        engine.dispose()
    check_predicted_once(connection, rows)
    return job_cpu / rows * 1e6, server_cpu / rows * 1e6


def onnxruntime_floor(predictor, values: np.ndarray, chunk: int, seconds: float = 3.0) -> tuple[float, float]:
    """onnxruntime's run() on chunks of the table's rows, as the job's predictor sets the session up: (rows/s, CPU µs
    per row)."""
    outputs = [predictor.score_output] + ([predictor.class_output] if predictor.class_output else [])
    chunks = [values[i : i + chunk] for i in range(0, len(values), chunk)]
    predictor.session.run(outputs, {predictor.input_name: chunks[0]})  # warm-up
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for batch in chunks:
            predictor.session.run(outputs, {predictor.input_name: batch})
            done += len(batch)
    return done / (time.perf_counter() - start), (time.process_time() - cpu) / done * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the table (default: 100,000)")
    parser.add_argument("--chunk", type=int, default=1000, help="CHUNK_SIZE of the jobs (default: 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per number of jobs (default: 3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="of the onnxruntime floor (default: 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="above 0: one untimed round first (default: 1)")
    args = parser.parse_args(argv)
    if not (1000 <= args.rows <= 10_000_000 and 1 <= args.chunk <= 10_000 and 1 <= args.rounds <= 10):
        parser.error("--rows within 1,000..10,000,000, --chunk within 1..10,000, --rounds within 1..10")
    if not (1 <= args.seconds <= 60 and 0 <= args.warmup <= 30):
        parser.error("--seconds within 1..60, --warmup within 0..30")
    from chapter4_serving_patterns.batch_pattern.seed import seed_rows
    from mlpatterns.dataplane import DataPlane
    from mlpatterns.predictor import OnnxPredictor

    # One model for the floor and the in-process job, set up as the job sets it up.
    plane = DataPlane(OnnxPredictor(MODEL, MODEL.with_name("labels.json")).load(), max_items=args.chunk)
    values = np.float32(seed_rows(0, args.rows)[0])
    port = free_port()
    server = PostgresServer(port).start()
    try:
        server.create_database("batch", "batch", "batch")
        url = f"postgresql://batch:batch@127.0.0.1:{port}/batch"
        env = dict(
            os.environ, DATABASE_URL=url.replace("postgresql:", "postgresql+psycopg2:"), PYTHONPATH=str(REPO_ROOT)
        )
        env |= {"CHUNK_SIZE": str(args.chunk), "START_DELAY_SECONDS": "0", "MODEL_PATH": str(MODEL)}
        print(f"seeding {args.rows:,} rows into a private PostgreSQL on port {port}...", flush=True)
        for step in (["migrate"], ["seed", "--rows", str(args.rows)]):
            subprocess.run(command(*step, env=env), env=env, cwd=REPO_ROOT, check=True, capture_output=True)
        if args.warmup:
            one_round(url, env, 1, args.rows)
        figures, shares, floors, floor_cpus = {}, {}, [], []
        for jobs in (1, 3):
            runs = []  # (rows/s end to end, rows/s with process starts, the floor's rows/s just before)
            for round_number in range(1, args.rounds + 1):
                floor, floor_cpu = onnxruntime_floor(plane.predictor, values, args.chunk, args.seconds)
                runs.append((*one_round(url, env, jobs, args.rows), floor))
                floors.append(floor)
                floor_cpus.append(floor_cpu)
                print(
                    f"  round {round_number}/{args.rounds}, {jobs} job(s): {runs[-1][0]:,.0f} rows/s "
                    f"({runs[-1][1]:,.0f} rows/s with process starts); the floor just before: {floor:,.0f}",
                    flush=True,
                )
            figures[jobs] = tuple(statistics.median(run[i] for run in runs) for i in range(2))
            shares[jobs] = tuple(statistics.median(run[i] / run[2] for run in runs) for i in range(2))
        cpus = [cpu_round(url, args.rows, plane) for _ in range(args.rounds)]
        cpu = tuple(statistics.median(run[i] for run in cpus) for i in range(2))
        print(f"  CPU per row: the job {cpu[0]:.2f} µs, PostgreSQL {cpu[1]:.2f} µs", flush=True)
    finally:
        server.stop()
    report = render(args, figures, shares, statistics.median(floors), cpu, statistics.median(floor_cpus))
    save_report("batch_pattern", report)
    return 0


def render(args, figures: dict, shares: dict, floor: float, cpu: tuple[float, float], floor_cpu: float) -> str:
    shown = "make bench P=chapter4_serving_patterns/batch_pattern" if os.environ.get("MAKELEVEL") else None
    shown = shown or " ".join(["python -m", f"{PACKAGE}.bench", *sys.argv[1:]])
    lines = [
        "## Benchmark: batch_pattern",
        "",
        f"- command: `{shown}`",
        f"- date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: nproc {len(os.sched_getaffinity(0))}, Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- table: {args.rows:,} rows on a private PostgreSQL; jobs with CHUNK_SIZE={args.chunk}; "
        f"each figure the median of {args.rounds} rounds",
        "",
        "| what | rows/s | share of the floor |",
        "|---|---:|---:|",
        *(
            f"| {jobs} job{'s' if jobs > 1 else ''} at once, end to end (take, predict, write back, commit) "
            f"| {end_to_end:,.0f} | {shares[jobs][0]:.1%} |"
            for jobs, (end_to_end, _) in figures.items()
        ),
        *(
            f"| {jobs} job{'s' if jobs > 1 else ''} at once, wall clock with process start and model load "
            f"| {wall:,.0f} | {shares[jobs][1]:.1%} |"
            for jobs, (_, wall) in figures.items()
        ),
        f"| 1 job in the bench's process, CPU time per row: the job {cpu[0]:.2f} µs + PostgreSQL {cpu[1]:.2f} µs "
        f"(rows/s if those were all) | {1e6 / sum(cpu):,.0f} | {floor_cpu / sum(cpu):.1%} |",
        f"| onnxruntime run() alone, {args.chunk}-row chunks of the same rows (floor, before each round; "
        f"{floor_cpu:.2f} µs of CPU per row) | {floor:,.0f} | 100% |",
        "",
        *verdict_lines(
            f"1 job end to end {figures[1][0]:,.0f} rows/s",
            f"{shares[1][0]:.0%} of onnxruntime's rows/s alone",
            f"at least {TARGET:.0%} of onnxruntime's rows/s",
            shares[1][0] >= TARGET,
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
