"""The prep service: the book's image API, with the model in another service.

    POST /predict        {"data": [base64 PNG/JPEG, ...]}  ->  {"prediction": [[p0, ..., p9], ...]}
    POST /predict/label  {"data": [base64 PNG/JPEG, ...]}  ->  {"prediction": ["3", ...]}

Each request's images are decoded, converted and resized here (`mlpatterns.images`: any mode, RGBA and greyscale
included) into one (N, 3, 32, 32) float32 tensor, which goes to the prediction service (pred.py) as its raw
bytes (`mlpatterns.tensors`), 12,288 per image, in one call. The answer's probabilities or labels are the
answer. The digits model normalises its raw 0..255 pixels itself, so no mean and std are applied here (a model
that wants them gets them from `ImagePreprocessor(mean=..., std=...)`).

This process imports no onnxruntime and reads no model file (its /metadata says so, from the interpreter's own
module table), so its image holds no model, and it scales on decoding work alone. When the prediction service
is down, /health still answers and the predictions are a 503 naming it (`mlpatterns.client`).
"""

import math
import sys
import time

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from mlpatterns import metrics
from mlpatterns.client import UpstreamSettings
from mlpatterns.errors import PayloadTooLarge, error_responses
from mlpatterns.images import Base64Image, ImagePreprocessor, sample_digits
from mlpatterns.serving.schemas import Health, LabelsResponse, ScoresResponse, TensorPrediction, predict_request
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import HttpServiceSettings
from mlpatterns.tensors import MEDIA_TYPE, encode_tensor

STAGE_SECONDS = metrics.histogram(
    "prep_stage_seconds", "Time of each stage of a prediction: preprocess here, predict in pred", ["stage"]
)
UPSTREAM_ERRORS = error_responses(502, 503, 504)  # the prediction service failed, is down, or is late


class PrepSettings(HttpServiceSettings, UpstreamSettings):
    api_title: str = "prep-pred: preprocessing service"
    prediction_url: str = Field("http://127.0.0.1:8001", description="The prediction service's base URL.")
    image_shape: tuple[int, int, int] = Field(
        (3, 32, 32), description="Channels, rows, columns of the tensor the model takes (JSON: [3, 32, 32])."
    )
    max_batch_rows: int = Field(64, gt=0, description="Requests with more images are refused with 413.")


def create_app(settings: PrepSettings | None = None) -> FastAPI:
    settings = settings or PrepSettings()
    preprocess = ImagePreprocessor(shape=settings.image_shape)
    sample = [sample_digits()["0"]]
    PredictRequest = predict_request(settings.image_shape, Base64Image, max_items=settings.max_batch_rows)

    async def predict(request: Request, images: list[str]) -> TensorPrediction:
        if len(images) > settings.max_batch_rows:
            raise PayloadTooLarge(f"data has {len(images)} items; at most {settings.max_batch_rows} are accepted")
        start = time.perf_counter()
        batch = await run_in_threadpool(preprocess, images)  # decoding takes milliseconds: off the event loop
        STAGE_SECONDS.labels("preprocess").observe(time.perf_counter() - start)
        body, headers = encode_tensor(batch)
        start = time.perf_counter()
        pred = request.app.state.upstreams["pred"]
        answer = await pred.post("/predict", content=body, headers=headers, model=TensorPrediction)
        STAGE_SECONDS.labels("predict").observe(time.perf_counter() - start)
        return answer

    def add_routes(router: APIRouter) -> None:
        @router.get("/health", response_model=Health)
        def health():
            return {"health": "ok"}  # its own health: a prediction service down leaves this service up

        @router.get("/metadata")
        def metadata() -> dict:
            return {
                "data_type": "str",
                "data_structure": f"({len(sample)},)",
                "data_sample": sample,
                "preprocess": {
                    "image_shape": list(settings.image_shape),
                    "tensor": f"float32, sent as {MEDIA_TYPE}",
                    "bytes_per_image": 4 * math.prod(settings.image_shape),
                },
                "prediction_service": settings.prediction_url,
                "onnxruntime_imported": "onnxruntime" in sys.modules,
            }

        @router.get("/label", response_model=dict[str, str], responses=UPSTREAM_ERRORS)
        async def label(request: Request):
            return await request.app.state.upstreams["pred"].get("/label")  # the labels live with the model

        @router.get("/predict/test", response_model=ScoresResponse, responses=UPSTREAM_ERRORS)
        async def predict_test(request: Request):
            return json_response({"prediction": (await predict(request, sample)).prediction})

        @router.get("/predict/test/label", response_model=LabelsResponse, responses=UPSTREAM_ERRORS)
        async def predict_test_label(request: Request):
            return json_response({"prediction": (await predict(request, sample)).labels})

        @router.post("/predict", response_model=ScoresResponse, responses=UPSTREAM_ERRORS)
        async def predict_scores(request: Request, body: PredictRequest):
            return json_response({"prediction": (await predict(request, body.data)).prediction})

        @router.post("/predict/label", response_model=LabelsResponse, responses=UPSTREAM_ERRORS)
        async def predict_label(request: Request, body: PredictRequest):
            return json_response({"prediction": (await predict(request, body.data)).labels})

    return create_service_app(settings, add_routes, upstreams={"pred": settings.prediction_url})


def json_response(content: dict) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")
