"""BentoML's iris service for `python -m mlpatterns.bench.peers`, run by the BentoML venv's Python.

`python bentoml_server.py` starts `bentoml serve` on this module with the environment's HOST, PORT, MODEL_PATH
and WORKERS. Settings, from BentoML's documentation (docs.bentoml.com: "Configurations", "Logging", "Services"):
an async API (`async def`, run on the worker's event loop, no thread pool), `workers` processes, the access
log off (`logging.access.enabled`), usage tracking off (BENTOML_DO_NOT_TRACK).
"""

import os
import sys
from pathlib import Path

import bentoml
import numpy as np
import onnxruntime as ort


@bentoml.service(workers=int(os.environ.get("WORKERS", "2")), logging={"access": {"enabled": False}})
class Iris:
    def __init__(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    @bentoml.api
    async def predict(self, data: list[list[float]]) -> dict:
        rows = np.asarray(data, dtype=np.float32)
        return {"prediction": self.session.run(["probabilities"], {self.input_name: rows})[0].tolist()}


if __name__ == "__main__":
    os.environ["MODEL_PATH"] = os.path.abspath(os.environ["MODEL_PATH"])
    os.environ["BENTOML_HOME"] = os.path.join(os.environ["TMPDIR"], "bentoml")  # its store: in the run's space
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    here = Path(__file__).parent
    command = ["bentoml", "serve", f"{Path(__file__).stem}:Iris", "--working-dir", str(here)]
    command += ["--host", os.environ.get("HOST", "127.0.0.1"), "--port", os.environ["PORT"]]
    os.execv(str(Path(sys.executable).with_name("bentoml")), command)
