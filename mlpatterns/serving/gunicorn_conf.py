"""gunicorn settings shared by every HTTP service: `gunicorn -c python:mlpatterns.serving.gunicorn_conf APP`.

Read from the environment when gunicorn starts. Deliberately absent, unlike the original launcher: `--reload`
(development only) and `--max-requests` (under keep-alive load its restarts leave every connection on one
worker and halve throughput).
"""

import asyncio
import os
import shutil
import tempfile

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker


class GunicornSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    host: str = Field("0.0.0.0", description="0.0.0.0 in a container; the local runner sets 127.0.0.1.")
    port: int = 8000
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, description="Worker processes (default: cores).")
    backlog: int = 2048
    timeout: int = 30
    graceful_timeout: int = 10
    keepalive: int = Field(5, description="Seconds an idle keep-alive connection is kept (uvicorn's keep-alive).")
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection may take to send a request's headers, counted from its opening or from "
        "its last answer; then it is closed. Bounds idle new connections and slow headers (slowloris).",
    )
    worker_connections: int = Field(
        1000, gt=0, description="Open connections per worker beyond which new requests are answered 503."
    )
    log_level: str = "info"


_server = GunicornSettings()


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, which waits for a request's headers as long as the client likes: its
    keep-alive timer is armed only after an answer and stopped by the next byte, so a new connection that sends
    nothing, or a header byte every few seconds, stayed open for good. Here a connection whose headers are not
    all in `header_timeout` seconds after it opened (or after its last answer) is closed.

    Checked once a second by one task per worker for all its connections (a timer per request costs more than
    the rest of the bookkeeping). What it cannot do: stop many clients that each open a fresh slow connection
    every few seconds; `worker_connections` caps how many there are at once, beyond which new requests get 503
    (fast, but a 503 to honest clients too). A reverse proxy in front (nginx's `client_header_timeout`) buffers
    headers and bodies of slow clients and is the real answer in production."""

    header_timeout = _server.header_timeout
    _sweeper: asyncio.Task | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.head_since: float | None = self.loop.time()  # waiting for a request's headers since (None: not)
        sweeper = HeaderTimeoutProtocol._sweeper
        if sweeper is None or sweeper.done() or sweeper.get_loop() is not self.loop:
            HeaderTimeoutProtocol._sweeper = self.loop.create_task(self._close_slow_heads(self.connections))

    def on_headers_complete(self) -> None:
        self.head_since = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle.response_complete:  # else a pipelined request, its headers read, was just started
            self.head_since = self.loop.time()

    @classmethod
    async def _close_slow_heads(cls, connections: set) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, cls.header_timeout / 4))
            too_old = loop.time() - cls.header_timeout
            for connection in list(connections):
                since = getattr(connection, "head_since", None)  # a websocket has none
                if since is not None and since < too_old:
                    connection.transport.close()


class Worker(UvicornWorker):
    """UvicornWorker with the header deadline above and gunicorn's `worker_connections` as uvicorn's
    `limit_concurrency`, which UvicornWorker does not pass on (its `keepalive` it does: uvicorn's
    `timeout_keep_alive`)."""

    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": HeaderTimeoutProtocol}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.limit_concurrency = self.cfg.worker_connections


bind = f"{_server.host}:{_server.port}"
workers = _server.workers
worker_class = Worker
worker_connections = _server.worker_connections
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
