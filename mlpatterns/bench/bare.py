"""The bare floor: the least a JSON predict can cost on this server stack, with none of the service around it.

One Starlette route that parses the body with orjson, hands `data` to onnxruntime as a float32 array and writes the
probabilities with orjson: no validation, no size or time bounds, no error answers, no metrics, no request id.
What a prediction costs when nothing else is done: the floor that the shared serving app is measured against
(`make bench` on a tabular pattern, `python -m mlpatterns.bench.inprocess`). Not a service to copy: a malformed
body is a 500 here.

    MODEL_PATH=models/iris_svc/model.onnx gunicorn -c python:mlpatterns.serving.gunicorn_conf \\
        "mlpatterns.bench.bare:create_bare_app()"
"""

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create_bare_app(model_path: Path | str | None = None) -> Starlette:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the predictor: one worker per core
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_path or os.environ["MODEL_PATH"]), options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    scores = next(o.name for o in session.get_outputs() if o.type == "tensor(float)")

    async def predict(request: Request) -> Response:
        data = np.asarray(orjson.loads(await request.body())["data"], dtype=np.float32)
        (probabilities,) = session.run([scores], {input_name: data})
        return Response(orjson.dumps({"prediction": probabilities.tolist()}), media_type="application/json")

    return Starlette(routes=[Route("/predict", predict, methods=["POST"])])
