"""Ray Serve's iris server for `python -m mlpatterns.bench.peers`, run by the Ray venv's Python.

Environment: PORT (where Serve's HAProxy listens), MODEL_PATH, WORKERS (replicas); the cluster's files go to a
/tmp/ray-* of its own, removed on the way out. Settings, from Ray Serve's documentation:
RAY_SERVE_ENABLE_HA_PROXY=1 and RAY_SERVE_THROUGHPUT_OPTIMIZED=1 ("Enable High Throughput on Ray Serve",
docs.ray.io, Ray 2.55 and later), the access log off (`LoggingConfig.enable_access_log`). One local cluster with
a CPU per replica; `max_ongoing_requests` is left at Serve's default (5 a replica).

Ray's actors lead process groups of their own, and HAProxy is a child of one of them: a signal to this
process's group alone would leave them running. So on SIGTERM or SIGINT this driver kills every process of its
own session (all of them started by it, through Ray), then exits: nothing else on the machine is touched.
"""

import os
import shutil
import signal
import socket
import tempfile


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Every file of this cluster in one short directory, removed on the way out: with TMPDIR in the run's deeper
# scratch space, Ray's GCS died seconds after its start here, with no error (Ray's Unix socket paths grow long).
RAY_DIR = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
HAPROXY_DIR = os.path.join(RAY_DIR, "haproxy")
# Read by Ray when it is imported: the documented flags, and this cluster's own ports and files for what Serve
# would otherwise put at fixed ports (8404, 9101, 8500, 9500) and in /tmp/haproxy-serve, shared by every Serve.
os.environ.update(
    TMPDIR=RAY_DIR,
    # A single-node cluster on loopback, as Ray runs on macOS and Windows: here it would talk to itself over the
    # machine's network address, and the bench sends nothing beyond 127.0.0.1.
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
    RAY_SERVE_ENABLE_HA_PROXY="1",
    RAY_SERVE_THROUGHPUT_OPTIMIZED="1",
    RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=os.path.join(HAPROXY_DIR, "haproxy.cfg"),
    RAY_SERVE_HAPROXY_SOCKET_PATH=os.path.join(HAPROXY_DIR, "admin.sock"),
    RAY_SERVE_HAPROXY_SERVER_STATE_BASE=HAPROXY_DIR,
    RAY_SERVE_HAPROXY_SERVER_STATE_FILE=os.path.join(HAPROXY_DIR, "server-state"),
    RAY_SERVE_HAPROXY_STATS_PORT=str(_free_port()),
    RAY_SERVE_HAPROXY_METRICS_PORT=str(_free_port()),
    RAY_SERVE_FALLBACK_PROXY_HTTP_PORT=str(_free_port()),
    RAY_SERVE_FALLBACK_PROXY_GRPC_PORT=str(_free_port()),
)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402


@serve.deployment(logging_config={"enable_access_log": False})
class Iris:
    def __init__(self, model_path: str):
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    async def __call__(self, request: Request) -> JSONResponse:
        if request.method == "GET":  # the bench's readiness check: routed only once the app is up
            return JSONResponse({"ready": True})
        rows = np.asarray((await request.json())["data"], dtype=np.float32)
        probabilities = self.session.run(["probabilities"], {self.input_name: rows})[0]
        return JSONResponse({"prediction": probabilities.tolist()})


def _kill_session() -> None:
    """SIGKILL every other process of this session: Ray's daemons, actors and HAProxy, all started here."""
    me, session = os.getpid(), os.getsid(0)
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            if pid != me and os.getsid(pid) == session:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


def main() -> None:
    if os.getsid(0) != os.getpid():
        raise SystemExit("ray_server.py leads its own session (the bench starts it so): it stops that session")
    replicas = int(os.environ.get("WORKERS", "2"))
    os.makedirs(HAPROXY_DIR, exist_ok=True)
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # Ray's threads inherit the mask: sigwait below takes them
    try:
        ray.init(
            num_cpus=replicas,
            include_dashboard=False,
            _temp_dir=os.path.join(RAY_DIR, "ray"),
            log_to_driver=False,
        )
        serve.start(http_options={"host": "127.0.0.1", "port": int(os.environ["PORT"])})
        app = Iris.options(num_replicas=replicas).bind(os.path.abspath(os.environ["MODEL_PATH"]))
        serve.run(app, name="iris", route_prefix="/predict")
        print(f"ray serve: iris on 127.0.0.1:{os.environ['PORT']}/predict, {replicas} replicas", flush=True)
        signal.sigwait(stop)
    finally:
        _kill_session()
        shutil.rmtree(RAY_DIR, ignore_errors=True)
    os._exit(0)  # Ray's threads would wait for the daemons just killed


if __name__ == "__main__":
    main()
