"""The open inference protocol's infer route against the book's /predict, in process: the CPU time of one request,
the same rows sent both ways, called straight through the ASGI app (every middleware, no socket, no server).

    python -m mlpatterns.bench.v2 [--seconds 1] [--rounds 3]

Rounds alternate the routes, so a neighbour taking the CPU disturbs both alike; the best round of each is kept.
The figure to read is the ratio in the last column (CPU time of /predict over V2's), not the microseconds, which
move with the machine's load.
"""

import argparse
import asyncio
import time
from collections.abc import Callable

import numpy as np
import orjson

from mlpatterns.bench.inprocess import asgi_caller
from mlpatterns.serving.app import create_serving_app
from mlpatterns.settings import ModelServingSettings

ROW_COUNTS = (1, 1000)


INFER = "/v2/models/iris_svc/infer"


def bodies(rows: np.ndarray) -> dict[str, tuple[str, bytes]]:
    """The same rows as /predict's nested batch and as V2 requests with flat data: for both outputs (labels and
    probabilities), and for the probabilities alone, which is what /predict answers."""
    tensor = {"name": "X", "shape": list(rows.shape), "datatype": "FP32", "data": rows.reshape(-1).tolist()}
    return {
        "/predict": ("/predict", orjson.dumps({"data": rows.tolist()})),
        "V2": (INFER, orjson.dumps({"inputs": [tensor]})),
        "V2 probabilities": (INFER, orjson.dumps({"inputs": [tensor], "outputs": [{"name": "probabilities"}]})),
    }


async def cpu_per_request(call: Callable, seconds: float) -> float:
    """Microseconds of CPU time per request over about `seconds` of requests (`call`: inprocess.asgi_caller's)."""
    count, start, deadline = 0, time.process_time(), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(10):
            await call()
        count += 10
    return (time.process_time() - start) / count * 1e6


async def main(seconds: float, rounds: int) -> None:
    app = create_serving_app(ModelServingSettings())
    rng = np.random.default_rng(0)
    names = list(bodies(np.zeros((1, 4))))
    print(
        f"{'rows':>5}"
        + "".join(f"  {name + ' us':>20}" for name in names)
        + "".join(f"  {'/predict / ' + name:>27}" for name in names[1:])
    )
    for count in ROW_COUNTS:
        rows = rng.uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], (count, 4)).round(1)
        calls = {name: asgi_caller(app, path, body) for name, (path, body) in bodies(rows).items()}
        for call in calls.values():
            await call()  # warm up
        best = dict.fromkeys(calls, float("inf"))
        for _ in range(rounds):
            for name, call in calls.items():
                best[name] = min(best[name], await cpu_per_request(call, seconds))
        figures = list(best.values())
        print(
            f"{count:>5}"
            + "".join(f"  {us:>20.1f}" for us in figures)
            + "".join(f"  {figures[0] / us:>27.2f}" for us in figures[1:])
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per route and round")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    asyncio.run(main(options.seconds, options.rounds))
