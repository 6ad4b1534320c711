"""`python -m mlpatterns.bench.inprocess`: the CPU a POST costs inside the app, with no server and no socket.

Each app is called as its server calls it (the ASGI interface), with one request at a time, and the process's own
CPU time is read around a run of requests: what the app's code costs per request, without the server, the kernel
or the load generator, which are the same for every app. The apps are timed in turn, round after round, and each
figure is the median of the rounds, so a busy spell of a shared machine hits them alike. Compared:

- the FastAPI JSON echo (`mlpatterns.bench.echo`), the floor of `make bench`;
- the bare server (`mlpatterns.bench.bare`): Starlette, orjson and onnxruntime, no checks, no metrics;
- web_single's /predict (the shared serving app), with 1, 100 and 1000 rows.

This is the tool for "one change at a time": it moves by a few percent between runs where wrk moves by tens.
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from mlpatterns.settings import IRIS_SAMPLE

MODEL = Path(__file__).resolve().parents[2] / "models" / "iris_svc" / "model.onnx"


def asgi_caller(app, path: str, body: bytes) -> Callable:
    """A coroutine function that POSTs `body` to `app` once and checks the answer is a 200."""
    headers = [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    request = {"type": "http.request", "body": body, "more_body": False}

    async def call() -> None:
        status = None

        async def receive():
            return request

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(scope), receive, send)
        await asyncio.sleep(0)  # a turn of the event loop, as a server's between two requests
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")

    return call


async def cpu_per_request(call: Callable, requests: int) -> float:
    start = time.process_time()
    for _ in range(requests):
        await call()
    return (time.process_time() - start) * 1e6 / requests


async def measure(targets: dict[str, Callable], requests: int, rounds: int) -> dict[str, float]:
    for call in targets.values():
        await cpu_per_request(call, max(1, requests // 10))  # warm-up: lazy imports, caches
    runs: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, call in targets.items():
            runs[name].append(await cpu_per_request(call, requests))
    return {name: statistics.median(values) for name, values in runs.items()}


def targets(rows: list[int]) -> dict[str, tuple[Callable, int]]:
    """name -> (caller, rows per request)."""
    # Imported here, once main() has set the metrics up as gunicorn does.
    from mlpatterns.bench.bare import create_bare_app
    from mlpatterns.bench.echo import create_echo_app
    from mlpatterns.serving.app import create_serving_app
    from mlpatterns.settings import ModelServingSettings

    serving = create_serving_app(ModelServingSettings(model_path=MODEL))
    bare = create_bare_app(MODEL)
    one = orjson.dumps({"data": IRIS_SAMPLE[:1]})
    found = {
        "FastAPI JSON echo": (asgi_caller(create_echo_app(), "/echo", one), 1),
    }
    for n in rows:
        body = orjson.dumps({"data": IRIS_SAMPLE[:1] * n})
        found[f"bare server, {n} rows"] = (asgi_caller(bare, "/predict", body), n)
        found[f"/predict, {n} rows"] = (asgi_caller(serving, "/predict", body), n)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlpatterns.bench.inprocess", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="per round for one row (default: 3000)")
    parser.add_argument("--rounds", type=int, default=5, help="default: 5")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100, 1000], help="rows per request")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mlpatterns-metrics-") as metrics_dir:
        # Metrics in gunicorn's multi-process mode (a file per process), which costs more per update than the
        # in-memory default: the mode every served pattern runs in.
        assert "prometheus_client" not in sys.modules, "imported before its mode was set"
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        return report(args)


def report(args: argparse.Namespace) -> int:
    found = targets(args.rows)

    async def run() -> dict[str, float]:
        results = {}
        for rows in sorted({n for _, n in found.values()}):
            group = {name: call for name, (call, n) in found.items() if n == rows}
            # Fewer requests for big batches, so each size takes about as long.
            results |= await measure(group, max(20, args.requests // rows), args.rounds)
        return results

    results = asyncio.run(run())
    echo = results["FastAPI JSON echo"]
    print(f"| what | CPU µs per request | ratio |\n|---|---:|---:|\n| FastAPI JSON echo | {echo:,.1f} | 1.00 (echo) |")
    for rows in args.rows:
        bare, ours = results[f"bare server, {rows} rows"], results[f"/predict, {rows} rows"]
        floor = f"{ours / echo:.2f} (echo)" if rows == 1 else ""
        print(f"| bare server, {rows} rows | {bare:,.1f} | |")
        print(f"| /predict, {rows} rows | {ours:,.1f} | {floor} {ours / bare:.2f} (bare) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
