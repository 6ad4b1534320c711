"""The asynchronous pattern's proxy: accept an image, answer with a job id at once, let a worker predict it.

    POST /predict      {"image_data": "<base64 PNG/JPEG>"}  ->  202 {"job_id": "<uuid4>"}
    GET  /predict/test                                     ->  202 {"job_id": ...} for the bundled sample digit
    GET  /job/{job_id}  ->  {"job_id", "state": pending|running|done|failed, "prediction", "scores", "error", ...}
    GET  /label         ->  {"0": "0", ..., "9": "9"}

The image is decoded and checked here, before anything is queued: a body that is no image is a 422 now, not a
failed job later. What goes on the queue is the decoded 3x32x32 float32 array (an .npy of 12 kB, whatever the
upload's size), so the image is decoded once and the worker does only the model's work. The job is stored in
Redis before the answer is sent (`JobQueue.submit`), so a GET right after the POST finds it.
"""

import io
import json
from contextlib import asynccontextmanager
from typing import Literal

import numpy as np
from fastapi import APIRouter, FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from chapter4_serving_patterns.asynchronous_pattern.settings import IMAGE_SHAPE, ProxySettings
from mlpatterns.errors import InvalidInput, NotFound, error_responses
from mlpatterns.images import Base64Image, ImagePreprocessor, sample_digits
from mlpatterns.jobs import Job, JobQueue
from mlpatterns.logging import request_id
from mlpatterns.serving.service import create_service_app

SAMPLE = sample_digits()


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"image_data": SAMPLE["7"]}]})

    image_data: Base64Image = Field(min_length=1)


class JobAccepted(BaseModel):
    job_id: str = Field(description="The job's id (a uuid4): ask GET /job/{job_id} for its state and result.")


class JobStatus(BaseModel):
    job_id: str
    state: Literal["pending", "running", "done", "failed"]
    prediction: str | None = Field(None, description="The digit's label, once done.")
    scores: list[float] | None = Field(None, description="The probability of each label, once done.")
    error: str | None = Field(None, description="Why the job failed.")
    submitted_at: float | None = Field(None, description="Unix time the proxy stored the job.")
    started_at: float | None = Field(None, description="Unix time a worker took it (last attempt).")
    finished_at: float | None = None
    attempts: int = Field(0, description="How many times a worker took it (more than 1: a worker died mid-job).")
    worker: str | None = Field(None, description="The worker that took it last (its consumer name, host-pid).")


def job_status(job: Job) -> dict:
    result = job.result or {}
    return {
        "job_id": job.id,
        "state": job.state,
        "prediction": result.get("prediction"),
        "scores": result.get("scores"),
        "error": job.error,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts": job.attempts,
        "worker": job.worker,
    }


def to_payload(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()
    labels = json.loads(settings.label_path.read_text())
    preprocess = ImagePreprocessor(shape=IMAGE_SHAPE)
    queue = JobQueue.from_settings(settings)  # and the queue's depth and job states on /metrics
    sample = SAMPLE[settings.sample_digit]

    async def submit(image_data: str) -> Response:
        try:
            pixels = await run_in_threadpool(preprocess, [image_data])
        except InvalidInput as error:  # "item 0 is not base64 ..." -> "image_data is not base64 ..."
            raise InvalidInput("image_data " + error.detail.removeprefix("item 0 ")) from None
        job_id = await queue.submit(to_payload(pixels[0]), request_id=request_id.get())
        return Response(
            JobAccepted(job_id=job_id).model_dump_json(),
            status_code=202,
            media_type="application/json",
            headers={"Location": f"/job/{job_id}"},
        )

    def add_routes(router: APIRouter) -> None:
        @router.get("/health")
        def health() -> dict[str, str]:
            return {"health": "ok"}

        @router.get("/label")
        def label() -> dict[str, str]:
            return labels

        @router.post("/predict", status_code=202, response_model=JobAccepted, responses=error_responses(503))
        async def predict(request: ImageRequest):
            return await submit(request.image_data)

        @router.get("/predict/test", status_code=202, response_model=JobAccepted, responses=error_responses(503))
        async def predict_test():
            return await submit(sample)

        @router.get("/job/{job_id}", response_model=JobStatus, responses=error_responses(404, 503))
        async def job(job_id: str):
            found = await queue.get(job_id)
            if found is None:
                raise NotFound("no such job: unknown, or its record expired")
            return job_status(found)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await queue.close()

    return create_service_app(settings, add_routes, lifespan=lifespan)
