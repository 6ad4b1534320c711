"""Images as jobs, the API side: what every pattern that queues images for a worker shares.

    pixels = await decode_image(preprocess, request.image_data)  # (3, 32, 32) float32, or a 422 naming image_data
    job_id = await submit_image(queue, pixels)                   # stored before the id is returned
    add_job_route(router, queue)                                 # GET /job/{job_id} -> JobStatus, 404 if unknown
    create_service_app(settings, add_routes, lifespan=closing(queue))  # the queue's connections closed at exit

The image is decoded and checked by the API, before anything is queued: a body that is no image is a 422 then,
not a failed job later. What goes on the queue is the decoded float32 array as an .npy (12 kB for a 3x32x32
digit, whatever the upload's size), so the image is decoded once and the worker (`mlpatterns.image_worker`)
does only the model's work. Used by the asynchronous and sync_async patterns' proxies.
"""

import io
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from mlpatterns.errors import InvalidInput, NotFound, error_responses
from mlpatterns.images import Base64Image, ImagePreprocessor, sample_digits
from mlpatterns.jobs import Job, JobQueue
from mlpatterns.logging import request_id

DIGITS_MODEL = Path("models/cifar10/model.onnx")  # the heavy model of the image-job workers: the digits CNN
IMAGE_SHAPE = (3, 32, 32)  # what an API decodes every image to: the digits CNN's input item

SAMPLE = sample_digits()


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"image_data": SAMPLE["7"]}]})

    image_data: Base64Image = Field(min_length=1)


class JobAccepted(BaseModel):
    job_id: str = Field(description="The job's id (a uuid4): ask GET /job/{job_id} for its state and result.")


class JobStatus(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    job_id: str
    state: Literal["pending", "running", "done", "failed"]
    prediction: str | None = Field(None, description="The image's label, once done.")
    scores: list[float] | None = Field(None, description="The probability of each label, once done.")
    model: str | None = Field(None, description="The model that answered, once done.")
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
        "model": result.get("model"),
        "error": job.error,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts": job.attempts,
        "worker": job.worker,
    }


def to_payload(array: np.ndarray) -> bytes:
    """An image array as a job's payload: .npy bytes (shape and dtype included, no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def from_payload(payload: object) -> np.ndarray:
    """A job's payload back as its array; TypeError for a payload of another kind (JSON from another producer)."""
    if not isinstance(payload, bytes):
        raise TypeError(f"the payload must be an .npy image array, not {type(payload).__name__}")
    return np.load(io.BytesIO(payload), allow_pickle=False)


def image_pixels(preprocess: ImagePreprocessor, image_data: str) -> np.ndarray:
    """One base64 image as its (C, H, W) pixels; the preprocessor's "item 0 ..." messages name `image_data`."""
    try:
        return preprocess([image_data])[0]
    except InvalidInput as error:  # "item 0 is not base64 ..." -> "image_data is not base64 ..."
        raise InvalidInput("image_data " + error.detail.removeprefix("item 0 ")) from None


async def decode_image(preprocess: ImagePreprocessor, image_data: str) -> np.ndarray:
    """`image_pixels` in the thread pool: decoding an image takes milliseconds."""
    return await run_in_threadpool(image_pixels, preprocess, image_data)


async def submit_image(queue: JobQueue, pixels: np.ndarray) -> str:
    """Queue the decoded image under the request's id; the job is stored once this returns."""
    return await queue.submit(to_payload(pixels), request_id=request_id.get())


def add_job_route(router: APIRouter, queue: JobQueue) -> None:
    """GET /job/{job_id}: the job's state and, once done, the worker's answer; 404 for an unknown or expired job."""

    @router.get("/job/{job_id}", response_model=JobStatus, responses=error_responses(404, 503))
    async def job(job_id: str):
        found = await queue.get(job_id)
        if found is None:
            raise NotFound("no such job: unknown, or its record expired")
        return job_status(found)


def closing(queue: JobQueue):
    """An app lifespan that closes the queue's Redis connections when the app stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await queue.close()

    return lifespan
