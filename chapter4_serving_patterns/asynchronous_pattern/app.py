"""The asynchronous pattern's proxy: accept an image, answer with a job id at once, let a worker predict it.

    POST /predict      {"image_data": "<base64 PNG/JPEG>"}  ->  202 {"job_id": "<uuid4>"}
    GET  /predict/test                                     ->  202 {"job_id": ...} for the bundled sample digit
    GET  /job/{job_id}  ->  {"job_id", "state": pending|running|done|failed, "prediction", "scores", "error", ...}
    GET  /label         ->  {"0": "0", ..., "9": "9"}

The image is decoded and checked here, before anything is queued: a body that is no image is a 422 now, not a
failed job later. What goes on the queue is the decoded 3x32x32 float32 array (an .npy of 12 kB, whatever the
upload's size), so the image is decoded once and the worker does only the model's work. The job is stored in
Redis before the answer is sent (`JobQueue.submit`), so a GET right after the POST finds it. The pieces are the
core's (`mlpatterns.image_jobs`), shared with the sync_async pattern.
"""

import json

from fastapi import APIRouter, FastAPI, Response

from chapter4_serving_patterns.asynchronous_pattern.settings import ProxySettings
from mlpatterns.errors import error_responses
from mlpatterns.image_jobs import (
    IMAGE_SHAPE,
    SAMPLE,
    ImageRequest,
    JobAccepted,
    add_job_route,
    closing,
    decode_image,
    submit_image,
)
from mlpatterns.images import ImagePreprocessor
from mlpatterns.jobs import JobQueue
from mlpatterns.serving.service import create_service_app


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()
    labels = json.loads(settings.label_path.read_text())
    preprocess = ImagePreprocessor(shape=IMAGE_SHAPE)
    queue = JobQueue.from_settings(settings)  # and the queue's depth and job states on /metrics
    sample = SAMPLE[settings.sample_digit]

    async def submit(image_data: str) -> Response:
        job_id = await submit_image(queue, await decode_image(preprocess, image_data))
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

        add_job_route(router, queue)

    return create_service_app(settings, add_routes, lifespan=closing(queue))
