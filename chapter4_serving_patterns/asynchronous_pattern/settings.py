"""The settings of the pattern's proxy (HTTP, submits jobs). Its worker is the core's image-job worker, whose
settings are `mlpatterns.image_worker.ImageWorkerSettings`.

Both read the queue's settings (REDIS_URL, QUEUE_NAME, PENDING_TTL_SECONDS, RESULT_TTL_SECONDS) from the same
environment variables, so compose and the manifests give both the same values.
"""

from pathlib import Path

from pydantic import Field

from mlpatterns.image_jobs import DIGITS_MODEL
from mlpatterns.jobs import QueueSettings
from mlpatterns.settings import HttpServiceSettings


class ProxySettings(HttpServiceSettings, QueueSettings):
    """The proxy: decodes and checks each image, queues it, answers with the job's id; reads jobs back."""

    api_title: str = "asynchronous pattern"
    label_path: Path = Field(
        DIGITS_MODEL.with_name("labels.json"), description="JSON object from class index to label (GET /label)."
    )
    sample_digit: str = Field("7", pattern="^[0-9]$", description="The bundled sample digit GET /predict/test submits.")
