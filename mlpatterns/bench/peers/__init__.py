"""The serving frameworks ours is compared with: MLServer, BentoML and Ray Serve, each in a venv of its own.

`python -m mlpatterns.bench.peers` (bench.py) installs them on first use (from PyPI, under build/peers/, never
in the project's lock), serves the iris SVC with each one's documented fastest settings (their server files
here say which and where documented), checks that each answers the same probabilities as ours, and loads
them in turn with ours and the echo floor. What each peer takes and answers is below.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Peer:
    name: str  # as --peers names it
    title: str  # as the report names it
    requirements: tuple[str, ...]  # pinned; onnxruntime and numpy are added at the project's own versions
    server: str  # the file in this package that the peer's Python runs (it reads HOST, PORT, MODEL_PATH, WORKERS)
    ready_path: str  # answers 2xx once the model is served
    predict_path: str
    settings: str  # what it was given to be fast, and where that is documented
    encode: Callable[[list[list[float]]], dict]  # rows -> the request body it takes
    decode: Callable[[dict], np.ndarray]  # its answer -> (rows, classes) probabilities

    @property
    def server_file(self) -> Path:
        return HERE / self.server


def _v2_request(rows: list[list[float]]) -> dict:
    """The open inference protocol's request: a flat FP32 tensor with its shape."""
    flat = [value for row in rows for value in row]
    return {"inputs": [{"name": "X", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": flat}]}


def _v2_probabilities(answer: dict) -> np.ndarray:
    output = next(o for o in answer["outputs"] if o["name"] == "probabilities")
    return np.asarray(output["data"], dtype=np.float64).reshape(output["shape"])


def data_request(rows: list[list[float]]) -> dict:
    return {"data": rows}


def prediction_of(answer: dict) -> np.ndarray:
    return np.asarray(answer["prediction"], dtype=np.float64)


PEERS = {
    peer.name: peer
    for peer in (
        Peer(
            name="mlserver",
            title="MLServer 1.7.1",
            # Its parallel workers call uvloop.install(): 0.21 is the last uvloop they run on (the finding).
            requirements=("mlserver==1.7.1", "uvloop==0.21.0"),
            server="mlserver_server.py",
            ready_path="/v2/health/ready",
            predict_path="/v2/models/iris/infer",
            settings="custom runtime on onnxruntime, `parallel_workers: 0` (inference in the one server process; "
            "docs.seldon.ai/mlserver, Parallel Inference), `gzip_enabled: false` (MLServer Settings)",
            encode=_v2_request,
            decode=_v2_probabilities,
        ),
        Peer(
            name="bentoml",
            title="BentoML 1.4.40",
            requirements=("bentoml==1.4.40",),
            server="bentoml_server.py",
            ready_path="/readyz",
            predict_path="/predict",
            settings="an async API, `workers=2`, access log off (`logging.access.enabled`; docs.bentoml.com, "
            "Configurations and Logging)",
            encode=data_request,
            decode=prediction_of,
        ),
        Peer(
            name="ray",
            title="Ray Serve 2.60.0",
            requirements=("ray[serve]==2.60.0",),
            server="ray_server.py",
            ready_path="/predict",  # its GET answers once Serve routes to the app
            predict_path="/predict",
            settings="`RAY_SERVE_ENABLE_HA_PROXY=1` (HAProxy ingress) and `RAY_SERVE_THROUGHPUT_OPTIMIZED=1` "
            '(docs.ray.io, "Enable High Throughput on Ray Serve"), 2 replicas, access log off '
            "(`LoggingConfig.enable_access_log`)",
            encode=data_request,
            decode=prediction_of,
        ),
    )
}
