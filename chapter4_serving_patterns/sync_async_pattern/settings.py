"""The proxy's settings. The proxy holds the sync (fast) model; the workers, the async (heavy) one: they are the
core's image-job workers (`mlpatterns.image_worker.ImageWorkerSettings`, MODEL_PATH the digits CNN by default).

Both sides read the queue's settings (REDIS_URL, QUEUE_NAME, PENDING_TTL_SECONDS, RESULT_TTL_SECONDS) from the
same environment variables, so compose and the manifests give both the same values.
"""

from pathlib import Path

from pydantic import Field

from mlpatterns.jobs import QueueSettings
from mlpatterns.settings import HttpServiceSettings, ModelPath


class ProxySettings(HttpServiceSettings, QueueSettings):
    """The proxy: decodes each image, answers with the sync model's label and the id of the async model's job."""

    api_title: str = "sync_async pattern"
    model_path: ModelPath = Path("models/digits_linear/model.onnx")  # the sync model, answered in the response
    async_model: str = Field(
        "cifar10", description="The name of the workers' model (in /metadata and /health/all; their MODEL_PATH's)."
    )
    sample_digit: str = Field("7", pattern="^[0-9]$", description="The bundled sample digit GET /predict/test sends.")
    worker_silent_seconds: float = Field(
        60.0,
        gt=0,
        description="A worker not heard from for this long is not counted alive in /health/all (workers beat in "
        "Redis every second while they wait, and after every job).",
    )

    @property
    def label_path(self) -> Path:
        return self.model_path.with_name("labels.json")
