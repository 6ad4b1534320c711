"""MLServer's iris runtime for `python -m mlpatterns.bench.peers`, run by the MLServer venv's Python.

`python mlserver_server.py` writes MLServer's two settings files into the run's TMPDIR (HTTP on the
environment's PORT, gRPC and metrics on free ports) and starts `mlserver start` there; `OnnxIris` is the
custom runtime (MLServer's documented way to serve a model it has no runtime for: onnxruntime here), taking
the open inference protocol's request at POST /v2/models/iris/infer. Settings, from MLServer's documentation
(docs.seldon.ai/mlserver: "Parallel Inference", "MLServer Settings"): `parallel_workers` 0, inference in the
server's own process (MLServer serves HTTP from one process whatever this number: more workers would only take
inference off it, through a queue); GZipMiddleware off (`gzip_enabled`), which a client that asks for no gzip
only pays for.
"""

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxIris(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.settings.parameters.uri, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        probabilities = self.session.run(["probabilities"], {self.input_name: rows})[0]
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("probabilities", probabilities)]
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    root = Path(os.environ["TMPDIR"]) / "mlserver"
    (root / "iris").mkdir(parents=True, exist_ok=True)
    settings = {
        "host": os.environ.get("HOST", "127.0.0.1"),
        "http_port": int(os.environ["PORT"]),
        "grpc_port": _free_port(),
        "metrics_port": _free_port(),
        "parallel_workers": int(os.environ.get("PARALLEL_WORKERS", "0")),
        "gzip_enabled": False,
        "debug": False,
    }
    (root / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": "iris",
        "implementation": f"{Path(__file__).stem}.OnnxIris",
        "parameters": {"uri": os.path.abspath(os.environ["MODEL_PATH"])},
    }
    (root / "iris" / "model-settings.json").write_text(json.dumps(model))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    os.chdir(root)  # MLServer keeps its .metrics and .envs folders in its working directory
    os.execv(str(Path(sys.executable).with_name("mlserver")), ["mlserver", "start", str(root)])
