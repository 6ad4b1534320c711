"""The settings of the pattern's two processes: the proxy (HTTP, submits jobs) and the worker (predicts them).

Both read the queue's settings (REDIS_URL, QUEUE_NAME, PENDING_TTL_SECONDS, RESULT_TTL_SECONDS) from the same
environment variables, so compose and the manifests give both the same values.
"""

from pathlib import Path

from pydantic import Field

from mlpatterns.jobs import QueueSettings
from mlpatterns.settings import HttpServiceSettings, ModelPath
from mlpatterns.worker import WorkerSettings

DIGITS_MODEL = Path("models/cifar10/model.onnx")
IMAGE_SHAPE = (3, 32, 32)  # what the proxy decodes every image to: the digits CNN's input item


class ProxySettings(HttpServiceSettings, QueueSettings):
    """The proxy: decodes and checks each image, queues it, answers with the job's id; reads jobs back."""

    api_title: str = "asynchronous pattern"
    label_path: Path = Field(
        DIGITS_MODEL.with_name("labels.json"), description="JSON object from class index to label (GET /label)."
    )
    sample_digit: str = Field("7", pattern="^[0-9]$", description="The bundled sample digit GET /predict/test submits.")


class AsyncWorkerSettings(WorkerSettings):
    """A worker: takes jobs from the queue, predicts them with the digits CNN, stores the results."""

    model_path: ModelPath = DIGITS_MODEL
    work_delay_seconds: float = Field(
        0.0,
        ge=0,
        description="Extra seconds each job takes, a stand-in for a slow model: local runs set it so a person sees a "
        "job pending and running, tests to make 'mid-job' certain; 0 in compose and Kubernetes.",
    )

    job_deadline_seconds: float = Field(
        0.0,
        ge=0,
        description="A job that waited longer than this in the queue (from its submission) fails without a "
        "prediction: its client has given up. 0: no deadline.",
    )

    @property
    def label_path(self) -> Path:
        return self.model_path.with_name("labels.json")
