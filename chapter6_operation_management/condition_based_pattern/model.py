"""One model of the pattern: an image classifier behind the original proxy's routes, started once per model.

    POST /predict       {"image_data": "<base64 PNG/JPEG>"}  ->  {"model": "digits", "prediction": "7", "scores": [...]}
    GET  /predict/test  ->  the same for the shipped sample digit
    GET  /health, /metadata, /label

Both models of the pattern are this module with other settings: the digits CNN answering "0".."9" (the general
model, the default route) and the fast linear digits model answering the digit's word, "zero".."nine" (LABEL_PATH
`words.json` beside this file), for clients that read the answer aloud (header `target: speech`). Every answer
names its model in `model`, so a caller (and the tests) can tell who answered; the label comes from that model's
own label set. Which model a request reaches is the router's choice (haproxy.cfg here, the VirtualService in
Kubernetes), never this server's.
"""

from pathlib import Path

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from mlpatterns.dataplane import Answer, DataPlane
from mlpatterns.image_jobs import IMAGE_SHAPE, SAMPLE, ImageRequest, image_pixels
from mlpatterns.images import ImagePreprocessor
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.serving.app import add_info_routes, json_response
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import ModelPath, ModelServingSettings


class ModelSettings(ModelServingSettings):
    """One model's server (environment variables of the same names, in upper case)."""

    model_path: ModelPath = Path("models/cifar10/model.onnx")
    model_name: str = Field("digits", description="The model's name in every answer's `model` and in the metrics.")
    sample_digit: str = Field("7", pattern="^[0-9]$", description="The shipped digit that /predict/test sends.")
    api_title: str = "condition-based pattern: one image model"
    max_body_bytes: int = Field(8 * 1_048_576, gt=0, description="Larger request bodies are refused with 413.")


class ModelAnswer(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description="The model that answered (the route the request took).")
    prediction: str = Field(description="The image's label, from that model's own label set (GET /label).")
    scores: list[float] = Field(description="The probability of each of the model's labels, in GET /label's order.")


def add_routes(router: APIRouter, plane: DataPlane, preprocess: ImagePreprocessor, sample: str) -> None:
    sample_pixels = image_pixels(preprocess, sample)[None]
    sample_answer = plane.predict(sample_pixels)
    add_info_routes(router, plane, [sample], sample_pixels, sample_answer)

    def body(answer: Answer) -> dict:
        return {"model": answer.model, "prediction": answer.labels[0], "scores": answer.scores[0]}

    def predict_image(image_data: str) -> Answer:
        # One hop to the thread pool for both: decoding takes milliseconds, either model well under one.
        return plane.predict(image_pixels(preprocess, image_data)[None])

    @router.post("/predict", response_model=ModelAnswer)
    async def predict(request: ImageRequest):
        return json_response(body(await run_in_threadpool(predict_image, request.image_data)))

    @router.get("/predict/test", response_model=ModelAnswer)
    def predict_test():
        return json_response(body(sample_answer))


def create_app(settings: ModelSettings | None = None) -> FastAPI:
    settings = settings or ModelSettings()
    predictor = OnnxPredictor(settings.model_path, settings.resolved_label_path).load()
    plane = DataPlane(predictor, name=settings.model_name, max_items=1)
    preprocess = ImagePreprocessor(shape=IMAGE_SHAPE)  # both models take raw 0..255 pixels, [N, 3, 32, 32]
    sample = SAMPLE[settings.sample_digit]
    app = create_service_app(settings, lambda router: add_routes(router, plane, preprocess, sample))
    app.state.plane = plane
    return app
