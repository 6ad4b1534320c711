"""gunicorn settings shared by every HTTP service: `gunicorn -c python:mlpatterns.serving.gunicorn_conf APP`.

Read from the environment when gunicorn starts. Deliberately absent, unlike the original launcher: `--reload`
(development only) and `--max-requests` (under keep-alive load its restarts leave every connection on one
worker and halve throughput).
"""

import os
import shutil
import tempfile

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GunicornSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    host: str = Field("0.0.0.0", description="0.0.0.0 in a container; the local runner sets 127.0.0.1.")
    port: int = 8000
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, description="Worker processes (default: cores).")
    backlog: int = 2048
    timeout: int = 30
    graceful_timeout: int = 10
    keepalive: int = 5
    log_level: str = "info"


_server = GunicornSettings()

bind = f"{_server.host}:{_server.port}"
workers = _server.workers
worker_class = "uvicorn_worker.UvicornWorker"
# Every worker listens on a socket of its own and the kernel spreads new connections across them. With the one
# shared socket, the first worker to wake accepts a whole burst of keep-alive connections (a load balancer's,
# a load test's) and keeps them while the other workers idle: throughput halves, by chance, on some starts.
reuse_port = True
backlog = _server.backlog
timeout = _server.timeout
graceful_timeout = _server.graceful_timeout
keepalive = _server.keepalive
loglevel = _server.log_level.lower()
# gunicorn 25+ opens a control socket under $HOME by default: every local gunicorn would claim the same path, and
# a read-only root filesystem (the Kubernetes manifests) has no $HOME to write to.
control_socket_disable = True
accesslog = None  # a log line per request costs more than the prediction; metrics count requests instead
errorlog = "-"


def on_starting(server):
    # Workers write their Prometheus samples here so /metrics can sum every worker's figures. It must be set
    # before a worker imports prometheus_client, so it is set in the master, before the fork.
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mlpatterns-metrics-")
        server._own_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    else:
        for stale in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]):
            os.unlink(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], stale))


def when_ready(server):
    # With reuse_port the master holds no socket, so gunicorn's own "Listening at" line shows no address.
    server.log.info("Workers listen at: http://%s", bind)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    own = getattr(server, "_own_metrics_dir", None)
    if own:
        shutil.rmtree(own, ignore_errors=True)
