"""The sync_async pattern's proxy: a fast model answers now, a heavy model's job answers later.

    POST /predict   {"image_data": "<base64 PNG/JPEG>"}
                    -> 200 {"job_id": "<uuid4>", "model": "digits_linear", "prediction": "7", "scores": [...]}
    GET  /predict/test  -> the same for the bundled sample digit
    GET  /job/{job_id}  -> {"job_id", "state": pending|running|done|failed, "prediction", "model": "cifar10", ...}
    GET  /health/all    -> {"sync_model": {"model", "health"}, "async_model": {"model", "health", "workers"}}
    GET  /label, /metadata, /health

The image is decoded once, in the thread pool: the sync model (logistic regression, ~15 us) predicts it there,
and the same decoded array is queued for the workers' digits CNN (`mlpatterns.image_jobs`, shared with the
asynchronous pattern), so a body that is no image is a 422 before anything is queued. The answer waits for the
sync model and for the job's record in Redis (so a GET right after it finds the job), never for the heavy model.
"""

from typing import Literal

import numpy as np
import orjson
import redis
from fastapi import APIRouter, FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from chapter4_serving_patterns.sync_async_pattern.settings import ProxySettings
from mlpatterns.dataplane import Answer, DataPlane
from mlpatterns.errors import error_responses
from mlpatterns.image_jobs import IMAGE_SHAPE, SAMPLE, ImageRequest, add_job_route, closing, image_pixels, submit_image
from mlpatterns.images import ImagePreprocessor
from mlpatterns.jobs import JobQueue
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.serving.service import create_service_app

Health = Literal["ok", "ng"]


class SyncAnswer(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    job_id: str = Field(description="The async model's job (a uuid4): GET /job/{job_id} gives its answer later.")
    model: str = Field(description="The sync model that answered here.")
    prediction: str = Field(description="The sync model's label for the image.")
    scores: list[float] = Field(description="The sync model's probability of each label.")


class ModelHealth(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    health: Health
    detail: str | None = Field(None, description="Why it is not ok.")


class AsyncModelHealth(ModelHealth):
    workers: int | None = Field(None, description="Workers heard from lately (None: Redis did not answer).")


class HealthAll(BaseModel):
    sync_model: ModelHealth
    async_model: AsyncModelHealth


class Metadata(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    data_type: str = Field(description="What each image is decoded to, and both models take.")
    data_structure: str
    data_sample: list[str] = Field(description="A request's image (base64 PNG).")
    prediction_type: str
    prediction_structure: str
    prediction_sample: list[list[float]] = Field(description="The sync model's scores for the sample.")
    sync_model: str
    async_model: str


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()
    plane = DataPlane(OnnxPredictor(settings.model_path, settings.label_path).load(), max_items=1)
    preprocess = ImagePreprocessor(shape=IMAGE_SHAPE)
    queue = JobQueue.from_settings(settings)  # and the queue's depth and job states on /metrics
    sample = SAMPLE[settings.sample_digit]
    sample_input = preprocess([sample])
    sample_answer = plane.predict(sample_input)

    def predict_now(image_data: str) -> tuple[np.ndarray, Answer]:
        # One hop to the thread pool for both: decoding takes milliseconds, the sync model microseconds.
        pixels = image_pixels(preprocess, image_data)
        return pixels, plane.predict(pixels[None])

    async def answer(image_data: str) -> Response:
        pixels, now = await run_in_threadpool(predict_now, image_data)
        job_id = await submit_image(queue, pixels)  # the heavy model's job: stored, not waited for
        body = {"job_id": job_id, "model": now.model, "prediction": now.labels[0], "scores": now.scores[0]}
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    def sync_health() -> dict:
        try:
            plane.predictor.predict(sample_input)  # the model alone: a health check is no answer on /metrics
        except Exception as error:  # a report, not a failure: /health/all says what is wrong with each model
            return {"model": plane.name, "health": "ng", "detail": f"{type(error).__name__}: {error}"}
        return {"model": plane.name, "health": "ok"}

    async def async_health() -> dict:
        model = settings.async_model
        try:
            workers = await queue.live_workers(settings.worker_silent_seconds)
        except redis.RedisError as error:
            return {"model": model, "health": "ng", "detail": f"Redis does not answer: {error}"}
        if not workers:
            silent = f"{settings.worker_silent_seconds:g} s"
            detail = f"no worker heard from in the last {silent}: jobs wait until one starts"
            return {"model": model, "health": "ng", "workers": 0, "detail": detail}
        return {"model": model, "health": "ok", "workers": len(workers)}

    def add_routes(router: APIRouter) -> None:
        @router.get("/health")
        def health() -> dict[str, str]:
            return {"health": "ok"}

        @router.get("/health/all", response_model=HealthAll, response_model_exclude_none=True)
        async def health_all():
            return {"sync_model": sync_health(), "async_model": await async_health()}

        @router.get("/label")
        def label() -> dict[str, str]:
            return {str(index): name for index, name in plane.predictor.labels.items()}

        @router.get("/metadata", response_model=Metadata)
        def metadata():
            return {
                "data_type": sample_input.dtype.name,
                "data_structure": str(tuple(sample_input.shape)),
                "data_sample": [sample],
                "prediction_type": sample_answer.scores.dtype.name,
                "prediction_structure": str(tuple(sample_answer.scores.shape)),
                "prediction_sample": sample_answer.scores.tolist(),
                "sync_model": plane.name,
                "async_model": settings.async_model,
            }

        @router.post("/predict", response_model=SyncAnswer, responses=error_responses(503))
        async def predict(request: ImageRequest):
            return await answer(request.image_data)

        @router.get("/predict/test", response_model=SyncAnswer, responses=error_responses(503))
        async def predict_test():
            return await answer(sample)

        add_job_route(router, queue)

    return create_service_app(settings, add_routes, lifespan=closing(queue))
