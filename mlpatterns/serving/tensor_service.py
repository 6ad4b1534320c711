"""A prediction service that takes tensors, never images: a model behind one route, for the patterns that split
preprocessing from prediction (prep_pred's pred, the cache patterns' pred).

    POST /predict   application/octet-stream, X-Tensor-Shape: N,3,32,32, X-Tensor-Dtype: float32
                    -> {"model": "cifar10", "prediction": [[p0, ..., p9], ...], "labels": ["3", ...]}

It knows nothing about image formats: decoding, resizing and normalising are its caller's, so its image carries
the model and onnxruntime and no Pillow code path, and scales on the model's CPU alone. The labels are answered
here, beside the probabilities: they are part of the model (labels.json is built with model.onnx), so a
retrained model with other classes is one deployment of this service, and its callers never read a model file.
A caller reads the answer as `mlpatterns.serving.schemas.TensorPrediction` (which imports no onnxruntime).
`prediction_requests_total{content_type}` counts what arrives on /predict (tensors only, where the split holds)
and `tensor_bytes_total` what was predicted. The open inference protocol's routes (`mlpatterns.serving.v2`) take
the same tensors as JSON.
"""

from pathlib import Path

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import Field

from mlpatterns import metrics
from mlpatterns.batching import enable_batching
from mlpatterns.dataplane import DataPlane
from mlpatterns.errors import InvalidInput
from mlpatterns.predictor import OnnxPredictor, value_limit
from mlpatterns.serving.schemas import Health, TensorPrediction
from mlpatterns.serving.service import create_service_app
from mlpatterns.serving.v2 import add_v2_routes
from mlpatterns.settings import ModelPath, ModelServingSettings
from mlpatterns.tensors import DTYPE_HEADER, MEDIA_TYPE, SHAPE_HEADER, openapi_request, read_tensor

RECEIVED = metrics.counter(
    "prediction_requests_total",
    "Bodies POSTed to /predict, by media type (application/octet-stream: a tensor; image: any image/*)",
    ["content_type"],
)
TENSOR_BYTES = metrics.counter("tensor_bytes_total", "Bytes of the tensors predicted")
MEDIA_LABELS = (MEDIA_TYPE, "application/json")  # kept as they are; anything else is counted as image or other


class TensorServiceSettings(ModelServingSettings):
    model_path: ModelPath = Path("models/cifar10/model.onnx")
    api_title: str = "prediction service (tensors)"
    max_batch_rows: int = Field(256, gt=0, description="Tensors of more images are refused with 413.")
    max_body_bytes: int = Field(
        4 * 1_048_576, gt=0, description="Larger bodies are refused with 413 (an image is 12,288 bytes)."
    )


def media_label(content_type: str | None) -> str:
    """A bounded label for the metric: a caller chooses the header, so its value is never a label as it is."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type in MEDIA_LABELS:
        return media_type
    if media_type.startswith("image/"):
        return "image"
    return "other" if media_type else "none"


def add_routes(router: APIRouter, plane: DataPlane) -> None:
    predictor = plane.predictor
    dtype = np.dtype(predictor.input_dtype).name
    item_shape = predictor.feature_shape  # [3, 32, 32]; -1: any size
    wire_shape = ",".join(["N", *(str(size) if size != -1 else "any" for size in item_shape)])
    labels = {str(index): name for index, name in predictor.labels.items()}

    @router.get("/health", response_model=Health)
    def health():
        return {"health": "ok"}

    @router.get("/metadata")
    def metadata() -> dict:
        return {
            "model": plane.name,
            "input": {"name": predictor.input_name, "dtype": dtype, "shape": ["N", *item_shape]},
            "request": {
                "content_type": MEDIA_TYPE,
                "headers": {SHAPE_HEADER: wire_shape, DTYPE_HEADER: dtype},
                "max_items": plane.max_items,
            },
            "labels": labels,
        }

    @router.get("/label", response_model=dict[str, str])
    def label():
        return labels

    async def predict(request: Request) -> Response:
        RECEIVED.labels(media_label(request.headers.get("content-type"))).inc()
        batch = await read_tensor(request)  # 415 for anything but a tensor, 422 for a malformed one
        if batch.dtype.name != dtype:
            raise InvalidInput(f"the model takes {dtype} tensors; got {batch.dtype.name}")
        if batch.ndim != len(item_shape) + 1 or any(
            e not in (-1, got) for e, got in zip(item_shape, batch.shape[1:], strict=True)
        ):
            got = ",".join(map(str, batch.shape))
            raise InvalidInput(f"the model takes tensors of shape {wire_shape}; got {got or 'a scalar'}")
        answer = await plane.predict_async(batch)  # the batch limit (413), finite values (422), the model
        TENSOR_BYTES.inc(batch.nbytes)
        content = {"model": answer.model, "prediction": answer.scores, "labels": answer.labels}
        return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    router.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        summary="Predict a batch of preprocessed images, sent as one tensor",
        response_model=TensorPrediction,
        openapi_extra=openapi_request(item_shape, dtype),
    )
    # The open inference protocol too, for KServe's and Triton's clients: JSON tensors, the model's own checks.
    black_image = np.zeros([1, *(max(size, 1) for size in item_shape)], dtype)
    add_v2_routes(router, plane, black_image, value_limit=value_limit(predictor.input_dtype))


def create_tensor_app(settings: TensorServiceSettings) -> FastAPI:
    predictor = OnnxPredictor(settings.model_path, settings.resolved_label_path).load()
    plane = DataPlane(predictor, name=settings.model_name, max_items=settings.max_batch_rows)
    enable_batching(plane, settings)
    return create_service_app(settings, lambda router: add_routes(router, plane))


def create_app() -> FastAPI:
    """The factory gunicorn and the runner call: `mlpatterns.serving.tensor_service:create_app()`, configured by
    the environment (MODEL_PATH, API_TITLE, ...)."""
    return create_tensor_app(TensorServiceSettings())
