"""Prometheus metrics: how a pattern declares its own, and the exposition every service and worker serves.

A pattern declares its metrics at module level with these functions, never with prometheus_client's classes
directly:

    JOBS = metrics.counter("jobs_total", "Jobs by final state", ["state"])
    QUEUE_WAIT = metrics.histogram("job_queue_wait_seconds", "Time from submission to a worker taking the job")
    CIRCUIT_OPEN = metrics.gauge("circuit_open", "1 while the circuit is open", ["backend"])

    JOBS.labels("done").inc()

They work the same in one process, under gunicorn's several workers and in queue workers:
- gunicorn sets PROMETHEUS_MULTIPROC_DIR before a worker imports prometheus_client; each process writes its
  samples to files there and `/metrics` sums them over every process, dead ones included. A queue worker
  (`mlpatterns.worker.run_worker`) is one process and serves its own figures on its METRICS_PORT;
- a gauge says how processes combine (`livesum` by default: the sum over the live processes, e.g. jobs in
  flight); a plain Gauge would show one arbitrary process's value;
- declaring the same metric again (a test building a second app in one process) returns the first one instead
  of failing with "Duplicated timeseries".

A hot path (every request's HTTP metrics, every prediction's stage timing) updates its children through
`deferred(child)` (or `DeferredChildren(metric)`, when its labels vary per request): on an event loop the updates
are kept in memory and written together once the loop has run what is ready (see Deferred), so a burst of
requests costs a few writes instead of several per request.

Figures that live in a shared store (a queue's depth in Redis) are read at scrape time by a collector, added with
`register_collector(key, collector)`: the store is right across processes and replicas, so such figures are
served as read, never summed over processes.
"""

import asyncio
import os
import threading
from bisect import bisect_left

from fastapi import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

# Seconds, from a fast in-process call (0.5 ms) to a slow upstream (10 s).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_declared: dict[str, Counter | Histogram | Gauge] = {}
_collectors: dict[str, Collector] = {}
_lock = threading.Lock()


def _declare(kind, name: str, documentation: str, labels, **options):
    with _lock:
        existing = _declared.get(name)
        if existing is not None:
            if not isinstance(existing, kind) or tuple(existing._labelnames) != tuple(labels):
                raise ValueError(f"metric {name!r} is already declared as another {type(existing).__name__}")
            return existing
        metric = kind(name, documentation, list(labels), **options)
        _declared[name] = metric
        return metric


def counter(name: str, documentation: str, labels: tuple[str, ...] | list[str] = ()) -> Counter:
    """A count that only goes up (requests, cache hits, jobs by state). Name it `..._total`."""
    return _declare(Counter, name, documentation, labels)


def histogram(
    name: str, documentation: str, labels: tuple[str, ...] | list[str] = (), buckets=LATENCY_BUCKETS
) -> Histogram:
    """A distribution (latencies in seconds, batch sizes: pass buckets that fit)."""
    return _declare(Histogram, name, documentation, labels, buckets=buckets)


def gauge(name: str, documentation: str, labels: tuple[str, ...] | list[str] = (), mode: str = "livesum") -> Gauge:
    """A value that goes up and down. `mode` says how several processes' values combine under gunicorn:
    `livesum` (default; in flight, queue depth seen by each), `liveall` (one series per live process),
    `max`/`min`, or `mostrecent` (the last value set by any process: a circuit's state)."""
    return _declare(Gauge, name, documentation, labels, multiprocess_mode=mode)


class Deferred:
    """A counter's or histogram's child whose updates made on an event loop are written at the end of the loop's
    current round (`loop.call_soon`), summed: one write per bucket touched instead of two per observation.

    Under gunicorn each write is a locked write to the worker's metrics file with a `getpid` check, 1-2 µs; a
    one-row prediction made four of them, and its stage timing four more, about a tenth of its whole cost. A
    busy worker answers several requests per round of its loop, and pays for the writes once. Nothing waits:
    the round ends within microseconds of the answer being sent, as the writes used to. Updates made off an
    event loop (a worker thread, a queue worker) are written at once, as before."""

    def __init__(self, child: Counter | Histogram):
        self.child = child
        self.histogram = isinstance(child, Histogram)
        # prometheus_client keeps a histogram child as one value per bucket (not cumulative) and a sum;
        # mlpatterns/tests/test_metrics.py holds deferred writes equal to observe()'s, so an upgrade that changes
        # this fails there.
        self.bounds = child._upper_bounds if self.histogram else ()

    def observe(self, amount: float) -> None:
        if not _defer(self, amount):
            self.child.observe(amount)

    def inc(self, amount: float = 1.0) -> None:
        if not _defer(self, amount):
            self.child.inc(amount)

    def write(self, amounts: list[float]) -> None:
        if not self.histogram:
            self.child.inc(sum(amounts))
            return
        counts: dict[int, int] = {}
        for amount in amounts:
            bucket = bisect_left(self.bounds, amount)  # the first bucket whose bound is >= amount, as observe()
            counts[bucket] = counts.get(bucket, 0) + 1
        self.child._sum.inc(sum(amounts))
        for bucket, count in counts.items():
            self.child._buckets[bucket].inc(count)


def deferred(child: Counter | Histogram) -> Deferred:
    """`child` (from `.labels(...)`), its updates on an event loop written together (see Deferred)."""
    return Deferred(child)


class DeferredChildren(dict):
    """A labelled metric's deferred children by their label values, each made once, on first use:
    `BY_BACKEND["setosa", "200"].observe(seconds)` without `labels()`'s checks and lookups on every update."""

    def __init__(self, metric: Counter | Histogram):
        super().__init__()
        self.metric = metric

    def __missing__(self, labels: tuple[str, ...]) -> Deferred:
        child = self[labels] = Deferred(self.metric.labels(*labels))
        return child


# Per thread (a test may run event loops in two threads): the updates waiting, and the loop that will write them.
_local = threading.local()


def _defer(metric: Deferred, amount: float) -> bool:
    """Keep an update for the end of the running loop's round; False off an event loop (write it now)."""
    # Once a write is scheduled, this thread is on that loop until the write runs, unless the loop stopped first
    # (is_running: an attribute read). Asking asyncio for the running loop costs a getpid() system call, 0.3-1 us
    # on these virtual machines, and a one-row prediction makes four updates.
    loop = getattr(_local, "loop", None)
    if loop is None or not loop.is_running():
        loop = asyncio._get_running_loop()  # None off a loop; the public get_running_loop() raises instead
        if loop is None:
            return False
        if getattr(_local, "waiting", None) is None:
            _local.waiting = {}
        loop.call_soon(flush_deferred)  # nothing scheduled yet, or on a loop that is gone
        _local.loop = loop
    waiting = _local.waiting
    amounts = waiting.get(metric)
    if amounts is None:
        waiting[metric] = [amount]
    else:
        amounts.append(amount)
    return True


def flush_deferred() -> None:
    """Write this thread's pending updates now (the end of a loop's round; also before `/metrics` answers)."""
    waiting = getattr(_local, "waiting", None)
    _local.loop = None
    while waiting:
        metric, amounts = waiting.popitem()
        metric.write(amounts)


def register_collector(key: str, collector: Collector) -> None:
    """Serve a collector's figures on this process's `/metrics`, in every mode. Registering again under the same
    key replaces the earlier collector (a test building a second app)."""
    with _lock:
        _collectors[key] = collector


def exposition() -> bytes:
    """Every metric of this service in Prometheus' text format, summed over its processes where there are several."""
    flush_deferred()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    with _lock:
        collectors = list(_collectors.values())
    # Each block of the text format names its own metric families, so the blocks can be joined as they are.
    return generate_latest(registry) + b"".join(generate_latest(collector) for collector in collectors)


def metrics_response() -> Response:
    """The `/metrics` route."""
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
