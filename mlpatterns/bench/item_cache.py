"""The bench of the cache patterns (prediction_cache, data_cache): a hit, a miss, and a bare Redis GET, in one run.

    python -m chapter4_serving_patterns.prediction_cache_pattern.bench [--seconds 3] [--rounds 3]
    (make bench P=chapter4_serving_patterns/prediction_cache_pattern)

1. hit: the pattern started by the local runner on free ports, its entry for one item stored, then wrk POSTs
   `{"data": <item>}` to the proxy's /predict/label: every request a hit (the proxy's cache_lookups_total says so);
2. the cache floor, loaded in turn with the hit: a bare Redis GET of the same entry behind a JSON POST on the same
   stack (`mlpatterns/bench/cache_get.py`, same worker count, the pattern's own Redis);
3. miss: the pattern started again with CACHE_TTL_SECONDS=0.001, so an entry is gone a millisecond after it is
   written, and one connection pausing 3 ms between requests: every request takes the whole way (load,
   preprocess, pred, store). The share of misses is read from the proxy's metrics and printed;
4. in process, for scale: what loading and preprocessing one item costs, and one onnxruntime call on its tensor.

Hits and the floor under wrk at 1 and 32 connections, misses at 1; each figure the median of --rounds runs.
Prints a table and writes it to build/bench/<pattern>.md.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import httpx
import orjson

from mlpatterns.bench.cpu import CpuMeter
from mlpatterns.bench.run import CONCURRENCIES, Target, measure, save_report, summarize
from mlpatterns.bench.verdict import verdict_lines
from mlpatterns.bench.wrk import WrkMissing, ensure_wrk, run_wrk
from mlpatterns.demo import metric_sum
from mlpatterns.images import ImagePreprocessor
from mlpatterns.items import ItemStore
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.runner.run import REPO_ROOT, RunnerError, run_pattern, stop_on_signals

FLOOR = Path(__file__).parent / "cache_floor"  # its docker-compose.yml: the bare GET as a one-service "pattern"
MODEL = REPO_ROOT / "models" / "cifar10" / "model.onnx"
ROUTE = "/predict/label"
MISS_DELAY_MS = 3  # between one connection's requests in the miss runs: longer than the 1 ms TTL


def cache_counts(proxy: str, namespace: str) -> dict[str, float]:
    with httpx.Client(base_url=proxy, timeout=10) as client:
        text = client.get("/metrics").text
    return {
        result: metric_sum(text, f'cache_lookups_total{{cache="{namespace}",result="{result}"}}')
        for result in ("hit", "miss")
    }


def share_of_misses(before: dict, after: dict) -> float:
    hits, misses = after["hit"] - before["hit"], after["miss"] - before["miss"]
    return misses / max(1.0, hits + misses)


def in_process(item: str, seconds: float = 1.0) -> tuple[float, float]:
    """Microseconds to load and preprocess the item; microseconds of one onnxruntime call on its tensor."""
    store, preprocess = ItemStore(), ImagePreprocessor()
    predictor = OnnxPredictor(MODEL).load()

    def per_call(call) -> float:
        call()
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            call()
            calls += 1
        return 1e6 * elapsed / calls

    tensor = preprocess.pixels(store.read(item))[None]
    feed = {predictor.input_name: tensor}
    return per_call(lambda: preprocess.pixels(store.read(item))), per_call(
        lambda: predictor.session.run([predictor.score_output], feed)
    )


def run(pattern: Path, item: str, seconds: float, rounds: int, warmup: float) -> tuple[dict, dict, str]:
    body = orjson.dumps({"data": item})
    with run_pattern(pattern, free_ports=True) as started:
        proxy = started.url("proxy")
        workers = started.running["proxy"].service.environment.get("WORKERS", "2")
        namespace = httpx.get(proxy + "/metadata", timeout=10).json()["cache"]["key"].split(":")[0]
        stored = httpx.post(proxy + ROUTE, json={"data": item}, timeout=10)
        if stored.status_code != 200:
            raise RunnerError(f"{ROUTE} answered {stored.status_code}: {stored.text[:200]}")
        overrides = {"REDIS_URL": f"redis://127.0.0.1:{started.port('redis')}/0", "WORKERS": workers}
        with run_pattern(
            FLOOR, free_ports=True, overrides={"get": overrides | {"CACHE_NAMESPACE": namespace}}
        ) as floor:
            targets = [
                Target(f"hit: POST {ROUTE}", proxy + ROUTE, started.running["proxy"].process.pid),
                Target("bare Redis GET (floor)", floor.url("get") + "/get", floor.running["get"].process.pid),
            ]
            before = cache_counts(proxy, namespace)
            hits = measure(targets, body, seconds, warmup, rounds)
            hits["hit misses"] = share_of_misses(before, cache_counts(proxy, namespace))
    # Every request a miss: entries live 1 ms (CACHE_TTL_SECONDS) and the one connection waits MISS_DELAY_MS
    # between requests, so the entry the last request wrote is gone when the next one looks.
    with run_pattern(pattern, free_ports=True, overrides={"proxy": {"CACHE_TTL_SECONDS": "0.001"}}) as started:
        proxy = started.url("proxy")
        if warmup:
            run_wrk(proxy + ROUTE, body, 1, warmup, delay_ms=MISS_DELAY_MS)
        before, runs = cache_counts(proxy, namespace), []
        for _ in range(rounds):
            with CpuMeter(started.running["proxy"].process.pid) as meter:
                load = run_wrk(proxy + ROUTE, body, 1, seconds, delay_ms=MISS_DELAY_MS)
            runs.append((load, meter.result))
        misses = {
            (f"miss: POST {ROUTE}", 1): summarize(runs),
            "miss misses": share_of_misses(before, cache_counts(proxy, namespace)),
        }
    return hits, misses, workers


def main(pattern: Path, argv: list[str] | None = None, max_hit_over_get: float | None = None) -> int:
    """`max_hit_over_get`: the performance issue's target for the hit's p50 at c=1 over the bare GET's, if any."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--item", default="0003", help="the item asked for (default 0003)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per wrk run (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per target and concurrency (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per target before the runs (default 1)")
    args = parser.parse_args(argv)
    stop_on_signals()
    name = pattern.resolve().name
    print(f"{name}: hits beside a bare Redis GET, then misses...", flush=True)
    try:
        ensure_wrk()
        hits, misses, workers = run(pattern, args.item, args.seconds, args.rounds, args.warmup)
    except (WrkMissing, RunnerError) as error:
        print(error, file=sys.stderr)
        return 1
    preprocess_us, model_us = in_process(args.item)
    figures = {key: value for key, value in (hits | misses).items() if isinstance(key, tuple)}
    rows = [
        f"| {label} | {c} | {f.rps:,.0f} | {f.p50_ms:.2f} ms | {f.p99_ms:.2f} ms | {f.cpu_us_per_request:,.0f} µs "
        f"| {f.errors} |"
        for (label, c), f in figures.items()
    ]
    hit, floor, miss = (f"hit: POST {ROUTE}", "bare Redis GET (floor)", f"miss: POST {ROUTE}")
    low, high = min(CONCURRENCIES), max(CONCURRENCIES)
    hit_over_get = figures[hit, low].p50_ms / figures[floor, low].p50_ms
    report = "\n".join(
        [
            f"## Benchmark: {name}",
            "",
            f"- command: `make bench P={pattern.resolve().relative_to(REPO_ROOT)}`",
            f"- machine: nproc {len(os.sched_getaffinity(0))}, Linux {platform.release()}, "
            f"Python {platform.python_version()}; the proxy and the floor: {workers} gunicorn workers",
            f'- load: wrk, 1 thread, body `{{"data": "{args.item}"}}`; each figure the median of {args.rounds} runs '
            f"of {args.seconds:g} s; the share of misses, from the proxy's cache_lookups_total: "
            f"{hits['hit misses']:.1%} in the hit runs, {misses['miss misses']:.1%} in the miss runs",
            f"- other processes used up to {max(f.other_cpu for f in figures.values()):.0%} of the machine's CPU "
            "during a run (a busy machine moves every figure; the ratios of one run move less)",
            "",
            "| what | connections | req/s | p50 | p99 | server CPU per request | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"- hit p50 at c={low}: {hit_over_get:.2f}x the bare GET's; "
            f"req/s at c={high}: {figures[hit, high].rps / figures[floor, high].rps:.0%} of the bare GET's",
            f"- miss p50 at c={low}: {figures[miss, low].p50_ms / figures[hit, low].p50_ms:.2f}x the hit's "
            f"(the miss runs: 1 connection pausing {MISS_DELAY_MS} ms between requests, so req/s is not a capacity)",
            f"- in process: loading and preprocessing item {args.item} {preprocess_us:,.0f} µs; "
            f"one onnxruntime call on its tensor {model_us:,.0f} µs",
            *verdict_lines(
                f"hit p50 at c={low} {figures[hit, low].p50_ms:.2f} ms",
                f"{hit_over_get:.2f}x the bare Redis GET's ({figures[floor, low].p50_ms:.2f} ms)",
                None if max_hit_over_get is None else f"at most {max_hit_over_get:g}x the bare Redis GET's p50",
                None if max_hit_over_get is None else hit_over_get <= max_hit_over_get,
            ),
            "",
        ]
    )
    save_report(name, report)
    errors = sum(f.errors for f in figures.values())
    if errors:
        print(f"ERROR: {errors} non-2xx answers or socket errors", file=sys.stderr)
    return 1 if errors else 0
