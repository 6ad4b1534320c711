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

Figures that live in a shared store (a queue's depth in Redis) are read at scrape time by a collector, added with
`register_collector(key, collector)`: the store is right across processes and replicas, so such figures are
served as read, never summed over processes.
"""

import os
import threading

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


def register_collector(key: str, collector: Collector) -> None:
    """Serve a collector's figures on this process's `/metrics`, in every mode. Registering again under the same
    key replaces the earlier collector (a test building a second app)."""
    with _lock:
        _collectors[key] = collector


def exposition() -> bytes:
    """Every metric of this service in Prometheus' text format, summed over its processes where there are several."""
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
