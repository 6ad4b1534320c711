"""The service the pipeline builds: the shared ONNX predictor over HTTP, for batches of 3x32x32 images.

    POST /predict        {"data": [image, ...]}  ->  {"prediction": [[p0, ..., p9], ...]}
    POST /predict/label  {"data": [image, ...]}  ->  {"prediction": ["cat", ...]}

An image is CIFAR-10's own layout, channels x rows x columns (3 x 32 x 32), of raw pixel values 0..255: the
model normalises them itself. The shared serving app takes 2-D rows only; this module serves N-d input with
the same pieces (predictor, errors, middleware) until it takes them too (README: "What is left").
"""

from pathlib import Path
from typing import Annotated

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from mlpatterns.errors import PayloadTooLarge, install_error_handlers
from mlpatterns.logging import configure_logging
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.serving.metrics import metrics_response
from mlpatterns.serving.middleware import BodySizeLimitMiddleware, MetricsMiddleware
from mlpatterns.serving.schemas import Feature, Health, LabelsResponse, ScoresResponse
from mlpatterns.settings import ServingSettings


def _first_error_only(item):
    """A list type that stops at its first bad item: an image has 3,072 numbers, a 422 should not list them all."""
    return Annotated[list[item], Field(fail_fast=True)]


Image = _first_error_only(_first_error_only(_first_error_only(Feature)))  # channels x rows x columns


class ImageBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: list[Image] = Field(min_length=1, fail_fast=True,
                              description="A batch of images, each 3 x 32 x 32 pixel values 0..255.")


class ImageServingSettings(ServingSettings):
    """The shared serving settings with this service's defaults (a JSON image is ~15 kB)."""

    model_path: Path = Field(Path("models/cifar10/model.onnx"),
                             validation_alias=AliasChoices("MODEL_PATH", "MODEL_FILEPATH"),
                             description="The ONNX model that the pipeline's build step put in place.")
    api_title: str = "cifar10 image classifier"
    max_body_bytes: int = Field(8 * 1_048_576, gt=0, description="Larger request bodies are refused with 413.")
    max_batch_rows: int = Field(256, gt=0, description="Batches with more images are refused with 413.")


def create_app(settings: ImageServingSettings | None = None) -> FastAPI:
    settings = settings or ImageServingSettings()
    configure_logging(settings.log_level, settings.log_json)
    predictor = OnnxPredictor(settings.model_path, settings.resolved_label_path).load()
    app = FastAPIOffline(title=settings.api_title, version=settings.api_version)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)

    def classify(batch: ImageBatch):
        if len(batch.data) > settings.max_batch_rows:
            raise PayloadTooLarge(f"data has {len(batch.data)} images; at most {settings.max_batch_rows} are accepted")
        return predictor.predict(batch.data)  # checks the image shape against the model's input

    # Plain `def`: FastAPI runs them in its thread pool, where a CNN call (milliseconds) does not block the loop.
    @app.post("/predict", response_model=ScoresResponse)
    def predict(batch: ImageBatch):
        return {"prediction": classify(batch).scores.tolist()}

    @app.post("/predict/label", response_model=LabelsResponse)
    def predict_label(batch: ImageBatch):
        return {"prediction": [predictor.label_of(index) for index in classify(batch).classes]}

    app.get("/health", response_model=Health)(lambda: {"health": "ok"})
    app.get("/label", response_model=dict[str, str])(lambda: {str(i): name for i, name in predictor.labels.items()})
    app.get("/metrics", include_in_schema=False)(metrics_response)
    return app
