"""`python -m mlpatterns.bench.hop`: what one call between services costs the caller, beside the fastest client.

A proxy, a fan-out or a prep service pays for each call it makes to another service: the client's CPU in the
caller's worker, on top of the callee's own time. This bench measures that cost alone. The echo floor of the
serving bench (echo.py, one gunicorn worker, started by the local runner on a free port) answers; this process
calls its POST /echo with the iris row, on uvloop as a service worker does, through:

- `Upstream.post` as the services use it (mlpatterns.client, its default transport);
- httpx's `AsyncClient.post`, set up as Upstream's client was before it moved to aiohttp, for comparison;
- aiohttp's `ClientSession.post` with the JSON read back: the floor, the least an asyncio HTTP client costs.

Each client is driven by 1, then 32, concurrent callers for --seconds; the figures are the calls per second, the
p50 of a call and this process's CPU time per call, the medians over --rounds, the clients loaded in turn each
round so that a slow spell of a shared machine hits them alike. Writes build/bench/hop.md.
"""

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import httpx
import orjson
import uvloop

from mlpatterns.bench.run import ECHO, add_run_options, parse_run_options, save_report
from mlpatterns.client import Upstreams, UpstreamSettings
from mlpatterns.runner.run import RunnerError, run_pattern, stop_on_signals
from mlpatterns.settings import IRIS_SAMPLE

CONCURRENCIES = (1, 32)
BODY = {"data": IRIS_SAMPLE}
PATH = "/echo"

Call = Callable[[], Awaitable[object]]


@asynccontextmanager
async def upstream(base_url: str) -> AsyncIterator[Call]:
    async with Upstreams({"echo": base_url}) as upstreams:
        echo = upstreams["echo"]
        yield lambda: echo.post(PATH, json=BODY)


@asynccontextmanager
async def httpx_client(base_url: str) -> AsyncIterator[Call]:
    """The client Upstream used before: httpx's AsyncClient, set up as Upstreams set it up."""
    settings = UpstreamSettings()
    connections = settings.upstream_max_connections
    async with httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(settings.upstream_read_timeout, connect=settings.upstream_connect_timeout),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        trust_env=False,
    ) as client:

        async def call() -> object:
            response = await client.post(PATH, json=BODY)
            response.raise_for_status()
            return orjson.loads(response.content)

        yield call


@asynccontextmanager
async def aiohttp_session(base_url: str) -> AsyncIterator[Call]:
    async with aiohttp.ClientSession(base_url) as session:

        async def call() -> object:
            async with session.post(PATH, json=BODY) as response:
                response.raise_for_status()
                return orjson.loads(await response.read())

        yield call


SHIPPED, FLOOR = "Upstream.post (as shipped)", "aiohttp ClientSession.post (the floor)"
CLIENTS: dict[str, Callable[[str], AbstractAsyncContextManager[Call]]] = {
    SHIPPED: upstream,
    "httpx AsyncClient.post (Upstream's client before)": httpx_client,
    FLOOR: aiohttp_session,
}


@dataclass
class Point:
    calls_per_second: float
    p50_ms: float
    cpu_us_per_call: float


async def drive(call: Call, concurrency: int, seconds: float) -> Point:
    """`concurrency` callers, each calling in a loop until `seconds` have passed."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while (start := time.perf_counter()) < deadline:
            await call()
            latencies.append(time.perf_counter() - start)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Point(len(latencies) / wall, statistics.median(latencies) * 1e3, cpu * 1e6 / len(latencies))


async def bench(base_url: str, seconds: float, warmup: float, rounds: int) -> dict[tuple[str, int], Point]:
    async with AsyncExitStack() as stack:  # every client open at once, so each round loads them in turn
        clients = {label: await stack.enter_async_context(make(base_url)) for label, make in CLIENTS.items()}
        if warmup:
            for call in clients.values():
                await drive(call, max(CONCURRENCIES), warmup)
        runs: dict[tuple[str, int], list[Point]] = {(label, c): [] for label in clients for c in CONCURRENCIES}
        for round_number in range(1, rounds + 1):
            for concurrency in CONCURRENCIES:
                for label, call in clients.items():
                    point = await drive(call, concurrency, seconds)
                    runs[label, concurrency].append(point)
                    print(
                        f"  round {round_number}/{rounds} c={concurrency:<3} {label}: {point.calls_per_second:,.0f} "
                        f"calls/s, p50 {point.p50_ms:.2f} ms, {point.cpu_us_per_call:,.0f} µs CPU per call",
                        flush=True,
                    )
    return {
        key: Point(*(statistics.median(getattr(p, f) for p in points) for f in Point.__dataclass_fields__))
        for key, points in runs.items()
    }


def render(args: argparse.Namespace, figures: dict[tuple[str, int], Point], load: str) -> str:
    lines = [
        "## Benchmark: one call between services (mlpatterns.client)",
        "",
        f"- command: `{shlex.join(['python', '-m', 'mlpatterns.bench.hop', *sys.argv[1:]])}`",
        f"- date: {datetime.now().astimezone().isoformat(timespec='seconds')}; load average before: {load}",
        f"- caller: this process on uvloop; callee: the FastAPI JSON echo, one gunicorn worker; body `{BODY}`; "
        f"each figure the median of {args.rounds} runs of {args.seconds:g} s, the clients in turn",
        "",
        "| client | concurrent calls | calls/s | p50 | caller CPU per call |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {label} | {c} | {p.calls_per_second:,.0f} | {p.p50_ms:.2f} ms | {p.cpu_us_per_call:,.0f} µs |"
            for label in CLIENTS
            for c in CONCURRENCIES
            for p in [figures[label, c]]
        ),
        "",
        *(
            f"- c={c}: Upstream.post costs {shipped.cpu_us_per_call / floor.cpu_us_per_call:.2f}x the floor's CPU per "
            f"call, its p50 is {shipped.p50_ms / floor.p50_ms:.2f}x the floor's"
            for c in CONCURRENCIES
            for shipped, floor in [(figures[SHIPPED, c], figures[FLOOR, c])]
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlpatterns.bench.hop", description=__doc__.splitlines()[0])
    add_run_options(parser)
    args = parse_run_options(parser, argv)
    stop_on_signals()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print("starting the echo floor (one worker)...", flush=True)
    try:
        with run_pattern(ECHO, overrides={"echo": {"WORKERS": "1"}}) as run:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                figures = runner.run(bench(run.url("echo"), args.seconds, args.warmup, args.rounds))
    except RunnerError as error:  # the echo did not start (Ctrl-C stops it on the way out too)
        print(error, file=sys.stderr)
        return 1
    save_report("hop", render(args, figures, load))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
