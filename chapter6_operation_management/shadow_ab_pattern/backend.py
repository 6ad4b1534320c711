"""Model A or model B of the shadow A/B pattern: the iris API on the original's routes, each prediction recorded.

One module and one image, run twice: with MODEL_PATH=models/iris_svc/model.onnx it is model A (`iris-svc`, the
live model, whose answers clients get), with models/iris_rf/model.onnx model B (`iris-rf`, the candidate, which
only ever sees copies of the live requests). The routes are the original's; each answer echoes the job id of its
path, and every row of a batch is answered:

    POST /predict/abcd        {"data": [[5.1, 3.5, 1.4, 0.2]]}  ->  {"job_id": "abcd", "prediction": [[0.97, ...]]}
    POST /predict-label/abcd  the same                           ->  {"job_id": "abcd", "prediction": ["setosa"]}
    GET  /predict-test/abcd, /predict-test-label/abcd            the same for the sample [[5.1, 3.5, 1.4, 0.2]]

Every answered request puts one record on chapter 5's prediction log (`mlpatterns.prediction_log`: stdout, and
LOG_PATH where set), off the request's path. The record carries the request id (X-Request-ID), which the proxy
(or Istio's sidecar) sends unchanged with both copies of a request, so A's and B's records of one request share
it and their predictions can be compared offline (`compare.py`). Refused input (422, 413) makes no record.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, FastAPI
from fastapi import Path as PathParameter
from pydantic import BaseModel, ConfigDict, Field

from mlpatterns.dataplane import Answer, DataPlane
from mlpatterns.logging import request_id
from mlpatterns.outlier import file_version
from mlpatterns.prediction_log import PredictionLog, PredictionLogSettings
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.serving.app import add_info_routes, add_post_routes, json_response, request_model
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import ModelServingSettings


class Settings(ModelServingSettings, PredictionLogSettings):
    """MODEL_PATH names the model (A or B); LOG_PATH, PREDICTION_LOG... the prediction log."""

    model_version: str | None = Field(
        None, description="The model's version in prediction records; default: its file's SHA-256, 12 digits."
    )


JobId = Annotated[
    str,
    PathParameter(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The caller's id for this request, echoed in the answer and recorded: letters, digits, _ and -.",
        examples=["abcd"],
    ),
]


class ScoresAnswer(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"job_id": "abcd", "prediction": [[0.968, 0.029, 0.003]]}]}
    )

    job_id: str = Field(description="The job id of the request's path.")
    prediction: list[list[float]] = Field(description="Per row: the class probabilities.")


class LabelsAnswer(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"job_id": "abcd", "prediction": ["setosa"]}]})

    job_id: str = Field(description="The job id of the request's path.")
    prediction: list[str] = Field(description="Per row: the most likely label.")


@dataclass(frozen=True)
class PredictionRecord:
    """One answered request, as the prediction log writes it (`record()` runs in the log's writer thread)."""

    endpoint: str  # the original's name of the route, e.g. "/predict-label"
    job_id: str
    request_id: str | None  # the same in A's and B's record of one request
    time: float  # Unix time of the answer
    input: list
    answer: Answer
    seconds: float  # from the validated request to the answer
    model_version: str

    def record(self) -> dict:
        return {
            "time": datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "request_id": self.request_id,
            "job_id": self.job_id,
            "endpoint": self.endpoint,
            "model": self.answer.model,
            "model_version": self.model_version,
            "input": self.input,
            "prediction": self.answer.scores,
            "label": self.answer.labels,
            "latency_ms": round(self.seconds * 1000, 3),
        }


def add_routes(router: APIRouter, plane: DataPlane, sample_input: list, model_version: str, log: PredictionLog | None):
    sample = plane.to_input(sample_input)
    sample_answer = plane.predict_input(sample)  # once, from the model itself
    add_info_routes(router, plane, sample_input, sample, sample_answer)
    PredictRequest = request_model(plane)

    def answered(endpoint: str, job_id: str, rows: list, answer: Answer, start: float, labels: bool):
        if log is not None:
            seconds = time.perf_counter() - start
            log.put(
                PredictionRecord(endpoint, job_id, request_id.get(), time.time(), rows, answer, seconds, model_version)
            )
        return json_response({"job_id": job_id, "prediction": answer.labels if labels else answer.scores})

    @router.get("/predict-test/{job_id}", response_model=ScoresAnswer)
    async def predict_test(job_id: JobId):
        return answered("/predict-test", job_id, sample_input, sample_answer, time.perf_counter(), labels=False)

    @router.get("/predict-test-label/{job_id}", response_model=LabelsAnswer)
    async def predict_test_label(job_id: JobId):
        return answered("/predict-test-label", job_id, sample_input, sample_answer, time.perf_counter(), labels=True)

    # async: a small batch is predicted on the event loop, a large one in the thread pool (DataPlane.predict_async).
    async def predict(job_id: JobId, body: PredictRequest):
        start = time.perf_counter()
        return answered("/predict", job_id, body.data, await plane.predict_async(body.data), start, labels=False)

    async def predict_label(job_id: JobId, body: PredictRequest):
        start = time.perf_counter()
        return answered("/predict-label", job_id, body.data, await plane.predict_async(body.data), start, labels=True)

    add_post_routes(
        router, [("/predict/{job_id}", predict, ScoresAnswer), ("/predict-label/{job_id}", predict_label, LabelsAnswer)]
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    plane = DataPlane(
        OnnxPredictor(settings.model_path, settings.resolved_label_path).load(),
        name=settings.model_name,
        max_items=settings.max_batch_rows,
    )
    version = settings.model_version or file_version(settings.model_path)
    log = PredictionLog.from_settings(settings) if settings.prediction_log else None
    return create_service_app(
        settings,
        lambda router: add_routes(router, plane, settings.sample_input, version, log),
        lifespan=log.lifespan if log is not None else None,
    )
