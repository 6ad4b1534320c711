"""The iris API with an outlier score: chapter 5's service, built once for prediction_log and prediction_monitoring.

    app = create_outlier_app(OutlierServingSettings(), on_prediction=sink)

Every answer carries, beside the classifier's `prediction`, one `is_outlier` and one `outlier_score` per row from
a one-class SVM (models/iris_ocs: is_outlier = score < OUTLIER_LOWER_THRESHOLD, the original's rule), and the
request id as `job_id`:

    POST /predict {"data": [[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4]]}
    -> {"job_id": "9f0c...", "prediction": [[0.97, 0.03, 0.00], [0.32, 0.00, 0.68]],
        "is_outlier": [false, true], "outlier_score": [0.19, -2.94]}

Lists per row, aligned with `prediction` (row i is prediction[i], is_outlier[i], outlier_score[i]): the
original answered one row only and refused more; a batch is answered whole, as every service of the project
does. `job_id` is the request id (X-Request-ID, in every log line too): the caller's, or 128 random bits
(a uuid's worth, as 32 hex digits) where it sent none; the original's 6 hex digits collided within thousands.

After each answer `on_prediction(event)` is called with a `PredictionEvent` (endpoint, request id, input, answer,
time taken): prediction_log puts it on its log queue, prediction_monitoring stores it. It runs on the request's
path, so it must not block: hand the event on, do the work elsewhere. Refused input (422/413) makes no event.
"""

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from fastapi import APIRouter, FastAPI
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from mlpatterns.batching import enable_batching
from mlpatterns.dataplane import Answer, DataPlane
from mlpatterns.logging import request_id
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.serving.app import add_info_routes, add_post_routes, json_response, request_model
from mlpatterns.serving.schemas import Metadata
from mlpatterns.serving.service import Lifespan, create_service_app
from mlpatterns.settings import ModelServingSettings


class OutlierServingSettings(ModelServingSettings):
    """The classifier of ModelServingSettings and the one-class model beside it."""

    outlier_model_path: Path = Field(
        Path("models/iris_ocs/model.onnx"),
        validation_alias=AliasChoices("OUTLIER_MODEL_PATH", "OUTLIER_MODEL_FILEPATH"),
        description="The one-class model whose decision function is the outlier score (OUTLIER_MODEL_FILEPATH, "
        "the original's name, is accepted too).",
    )
    outlier_lower_threshold: float = Field(0.0, description="A row whose outlier score is below this is an outlier.")
    model_version: str | None = Field(
        None, description="The classifier's version in prediction records; default: its file's SHA-256, 12 digits."
    )


def file_version(path: Path) -> str:
    """A model file's version: the first 12 hex digits of its SHA-256 (the same file is the same version)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


class OutlierScorer:
    """A data-plane postprocess hook: adds `is_outlier` and `outlier_score`, one per row, from a one-class model."""

    def __init__(self, predictor: OnnxPredictor, threshold: float = 0.0, name: str | None = None):
        self.predictor = predictor
        self.threshold = threshold
        self.name = name or predictor.model_path.parent.name

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return self.predictor.predict(batch).scores[:, 0]  # the decision function, (N, 1) -> (N,)

    def __call__(self, answer: Answer, batch: np.ndarray) -> Answer:
        scores = self.scores(batch)
        return answer.with_extra(is_outlier=scores < self.threshold, outlier_score=scores)


@dataclass(frozen=True)
class PredictionEvent:
    """One answered prediction request, as `on_prediction` receives it."""

    endpoint: str  # the route, e.g. "/predict/label"
    request_id: str | None  # = the answer's job_id
    time: float  # Unix time of the answer
    input: list  # the rows as the request sent them
    answer: Answer  # scores, labels and the outlier fields of every row
    seconds: float  # from the validated request to the answer: both models and the answer's fields
    model_version: str
    outlier_model: str

    def record(self) -> dict:
        """The event as one JSON-able record (numpy arrays as they are: orjson's OPT_SERIALIZE_NUMPY writes them)."""
        extra = self.answer.extra
        return {
            "time": datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "request_id": self.request_id,
            "endpoint": self.endpoint,
            "model": self.answer.model,
            "model_version": self.model_version,
            "outlier_model": self.outlier_model,
            "input": self.input,
            "prediction": self.answer.scores,
            "label": self.answer.labels,
            "is_outlier": extra["is_outlier"],
            "outlier_score": extra["outlier_score"],
            "latency_ms": round(self.seconds * 1000, 3),
        }


OnPrediction = Callable[[PredictionEvent], None]


class OutlierMetadata(Metadata):
    outlier_type: str = Field(description="The types of a row's outlier flag and score.")
    outlier_structure: str
    outlier_sample: list = Field(description="The sample's first row: [is_outlier, outlier_score].")


class _OutlierAnswer(BaseModel):
    job_id: str = Field(description="The request id (X-Request-ID): one per request, not per row.")
    is_outlier: list[bool] = Field(description="Per row: its outlier score is below the threshold.")
    outlier_score: list[float] = Field(description="Per row: the one-class model's decision function.")


_EXAMPLE = {"job_id": "5f2b9c1e0d7a4e3b8c6f1a2d3e4b5c6d", "is_outlier": [False], "outlier_score": [0.192]}


class OutlierScoresResponse(_OutlierAnswer):
    model_config = ConfigDict(json_schema_extra={"examples": [{**_EXAMPLE, "prediction": [[0.968, 0.029, 0.003]]}]})

    prediction: list[list[float]] = Field(description="Per row: the class probabilities.")


class OutlierLabelsResponse(_OutlierAnswer):
    model_config = ConfigDict(json_schema_extra={"examples": [{**_EXAMPLE, "prediction": ["setosa"]}]})

    prediction: list[str] = Field(description="Per row: the most likely label.")


def add_outlier_routes(
    router: APIRouter,
    plane: DataPlane,
    sample_input: list,
    *,
    model_version: str,
    on_prediction: OnPrediction | None = None,
) -> None:
    """The book's routes of the iris API with outlier fields; `plane` has an OutlierScorer as its postprocess."""
    scorer: OutlierScorer = plane.postprocess
    sample = plane.to_input(sample_input)
    sample_answer = plane.predict_input(sample)
    first_score = float(sample_answer.extra["outlier_score"][0])
    add_info_routes(
        router,
        plane,
        sample_input,
        sample,
        sample_answer,
        metadata_model=OutlierMetadata,
        more_metadata={
            "outlier_type": "bool, float32",
            "outlier_structure": "(1, 2)",
            "outlier_sample": [first_score < scorer.threshold, first_score],
        },
    )
    PredictRequest = request_model(plane)

    def answered(endpoint: str, rows: list, answer: Answer, start: float, labels: bool):
        rid = request_id.get()
        if on_prediction is not None:
            now = time.time()
            on_prediction(
                PredictionEvent(
                    endpoint, rid, now, rows, answer, time.perf_counter() - start, model_version, scorer.name
                )
            )
        prediction = answer.labels if labels else answer.scores
        return json_response({"job_id": rid, "prediction": prediction, **answer.extra})

    @router.get("/predict/test", response_model=OutlierScoresResponse)
    def predict_test():
        return answered("/predict/test", sample_input, sample_answer, time.perf_counter(), labels=False)

    @router.get("/predict/test/label", response_model=OutlierLabelsResponse)
    def predict_test_label():
        return answered("/predict/test/label", sample_input, sample_answer, time.perf_counter(), labels=True)

    # async: small batches are predicted on the event loop, large ones in the thread pool (DataPlane.predict_async).
    async def predict_scores(request: PredictRequest):
        start = time.perf_counter()
        return answered("/predict", request.data, await plane.predict_async(request.data), start, labels=False)

    async def predict_label(request: PredictRequest):
        start = time.perf_counter()
        return answered("/predict/label", request.data, await plane.predict_async(request.data), start, labels=True)

    add_post_routes(
        router,
        [("/predict", predict_scores, OutlierScoresResponse), ("/predict/label", predict_label, OutlierLabelsResponse)],
    )


def create_outlier_app(
    settings: OutlierServingSettings,
    *,
    on_prediction: OnPrediction | None = None,
    lifespan: Lifespan | None = None,
) -> FastAPI:
    """The iris API with outlier fields for `settings`' two models; `on_prediction` sees every answered request."""
    predictor = OnnxPredictor(settings.model_path, settings.resolved_label_path).load()
    outlier = OnnxPredictor(settings.outlier_model_path).load()
    plane = DataPlane(
        predictor,
        name=settings.model_name,
        max_items=settings.max_batch_rows,
        postprocess=OutlierScorer(outlier, settings.outlier_lower_threshold),
    )
    enable_batching(plane, settings)  # the outlier score is still each request's own: the hook runs per request
    version = settings.model_version or file_version(settings.model_path)
    app = create_service_app(
        settings,
        lambda router: add_outlier_routes(
            router, plane, settings.sample_input, model_version=version, on_prediction=on_prediction
        ),
        lifespan=lifespan,
    )
    app.state.plane = plane
    return app
