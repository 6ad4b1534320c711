"""Prometheus exposition that also works under gunicorn's several worker processes.

With PROMETHEUS_MULTIPROC_DIR set (the gunicorn config sets it), each worker writes its samples to files in
that directory and /metrics sums them; without it, the process's own registry is served.
"""

import os

from fastapi import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client import REGISTRY


def metrics_response() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
