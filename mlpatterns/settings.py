"""Settings read from environment variables, in one place per kind of service.

Nothing is read at import: a service builds its settings object when it starts (`ModelServingSettings()`), and a
test builds its own. Defaults work for a local run from the repository root; compose files and Kubernetes
manifests override them with environment variables of the same name in upper case.
"""

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

IRIS_SAMPLE = [[5.1, 3.5, 1.4, 0.2]]

# The model file's setting, declared once: a subclass gives it another default with `model_path: ModelPath = ...`
# and keeps the environment names (MODEL_FILEPATH is the original sample's).
ModelPath = Annotated[
    Path,
    Field(
        validation_alias=AliasChoices("MODEL_PATH", "MODEL_FILEPATH"),
        description="The ONNX model to serve (MODEL_FILEPATH, the original sample's name, is accepted too).",
    ),
]


class HttpServiceSettings(BaseSettings):
    """What every HTTP service of the project has: its API's name, its body limit, its logging."""

    model_config = SettingsConfigDict(extra="ignore", protected_namespaces=(), frozen=True)

    api_title: str = "ServingPattern"
    api_description: str = "machine learning system serving patterns"
    api_version: str = "0.1"
    max_body_bytes: int = Field(1_048_576, gt=0, description="Larger request bodies are refused with 413.")
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="A request body not all received this long after the app starts reading it: 408."
    )
    body_idle_timeout_seconds: float = Field(
        10.0, gt=0, description="A request body of which nothing new arrives for this long: 408."
    )
    log_level: str = "INFO"
    log_json: bool = Field(False, description="Log one JSON object per line instead of plain text.")


class ModelServingSettings(HttpServiceSettings):
    """A model-serving API (web single and every pattern built on it)."""

    model_path: ModelPath = Path("models/iris_svc/model.onnx")
    model_name: str | None = Field(
        None, description="The model's name in answers and metrics; default: the model file's directory name."
    )
    served_model_name: str | None = Field(
        None,
        description="The model's name in the open inference protocol's paths (/v2/models/NAME/infer) and answers; "
        "default: model_name. Models that stand in for each other behind one address (the arms of an A/B test) "
        "share one.",
    )
    label_path: Path | None = Field(
        None,
        validation_alias=AliasChoices("LABEL_PATH", "LABEL_FILEPATH"),
        description="JSON object from class index to label; default: labels.json beside the model.",
    )
    sample_input: list = Field(
        IRIS_SAMPLE,
        description="The example batch of /metadata and /predict/test: items as deep as the model's input "
        "(checked against the model when the service starts).",
    )
    max_batch_rows: int = Field(10_000, gt=0, description="Batches with more rows are refused with 413.")
    # Micro-batching (mlpatterns.batching): concurrent requests predicted in one model call.
    batch_max_wait_ms: float = Field(
        0, ge=0, le=1000, description="Micro-batching on when > 0: the longest a request waits for others; 0: off."
    )
    batch_max_items: int = Field(64, gt=0, description="Micro-batching: at most this many items in one model call.")
    batch_adaptive: bool = Field(
        True, description="Micro-batching: an idle model takes what waits at once (no wait at low load)."
    )

    @property
    def resolved_label_path(self) -> Path:
        return self.label_path or self.model_path.with_name("labels.json")
