"""The model loader: fetch the model into the shared volume, verify it, and only then let the API start.

    MODEL_SOURCE=http://repository:8080/iris_svc/model.onnx MODEL_DIR=/models python -m <this module>
    MODEL_DB_URL=http://model-db:8000 MODEL_NAME=iris_rf MODEL_DIR=/models python -m <this module>

The second form loads the newest experiment of a model registered in the model management DB
(chapter2_training/model_db): its artifact paths name the model, its labels and its checksum.

It runs once, before the API: a Kubernetes init container, a compose service the API depends on with
`service_completed_successfully`, a one-shot process in the local runner. Any failure exits non-zero with
one line saying what is wrong, so the API never starts on a missing, corrupt or wrong-shaped model.

Verification, in order: the checksum (MODEL_SHA256, or the `<source>.sha256` file published beside the
model), that onnxruntime loads it, that it takes rows of the shape the API serves, that it predicts, and
that the labels parse. The files are moved into MODEL_DIR only after all of that passed.
"""

import hashlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlpatterns.logging import configure_logging
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.registry import ModelRegistry, RegistryError

logger = logging.getLogger("model_loader")


class LoaderSettings(BaseSettings):
    model_config = SettingsConfigDict(protected_namespaces=())

    model_source: str | None = Field(None, description="A path, file:// or http(s):// URL of the ONNX model.")
    model_db_url: str | None = Field(None, description="A model_db service to look MODEL_NAME up in instead.")
    model_name: str | None = Field(None, description="The registered model whose newest experiment to load.")
    model_project: str = Field("iris", description="The model_db project of MODEL_NAME.")
    label_source: str | None = Field(None, description="Where its labels are; default: labels.json beside it.")
    model_sha256: str | None = Field(None, description="Expected checksum; default: read from <source>.sha256.")
    model_dir: Path = Field(Path("/models"), description="The shared volume the API loads from.")
    expected_input_shape: list[int] = Field([4], description="Shape of one input row, as the API serves it.")
    timeout: float = 30.0


class LoadError(Exception):
    pass


def beside(source: str, name: str) -> str:
    """The location of file `name` in the same folder as `source`."""
    head, _, _ = source.rpartition("/")
    return f"{head}/{name}" if head else name


def fetch(source: str, timeout: float) -> bytes:
    scheme = urlsplit(source).scheme
    if scheme in ("http", "https"):
        try:
            response = httpx.get(source, timeout=timeout, follow_redirects=True)
        except httpx.HTTPError as error:
            raise LoadError(f"cannot reach {source}: {error}") from None
        if response.status_code != 200:
            raise LoadError(f"{source} answered {response.status_code}")
        return response.content
    path = Path(urlsplit(source).path if scheme == "file" else source)
    try:
        return path.read_bytes()
    except OSError as error:
        raise LoadError(f"cannot read {path}: {error.strerror}") from None


def expected_checksum(settings: LoaderSettings) -> str:
    if settings.model_sha256:
        return settings.model_sha256.lower()
    try:
        return fetch(settings.model_source + ".sha256", settings.timeout).split()[0].decode().lower()
    except (LoadError, IndexError) as error:
        raise LoadError(
            f"no checksum for {settings.model_source}: set MODEL_SHA256 or publish <source>.sha256 ({error})"
        ) from None


def verify(model_path: Path, label_path: Path, expected_shape: list[int]) -> str:
    """Load the fetched model as the API will and predict once; return a one-line description."""
    try:
        predictor = OnnxPredictor(model_path, label_path).load()
    except json.JSONDecodeError as error:
        raise LoadError(f"labels are not valid JSON: {error}") from None
    except Exception as error:  # onnxruntime raises its own types for an unreadable model
        raise LoadError(f"onnxruntime cannot load the model: {str(error).splitlines()[0]}") from None
    if predictor.feature_shape != expected_shape:
        raise LoadError(f"the model takes rows of shape {predictor.feature_shape}, the API serves {expected_shape}")
    probe = np.zeros([1, *expected_shape], dtype=predictor.input_dtype)
    classes = predictor.predict(probe).classes
    missing = [int(c) for c in classes if int(c) not in predictor.labels]
    if missing:
        raise LoadError(f"labels have no name for class {missing[0]}")
    return f"input {predictor.input_name} {predictor.input_shape}, {len(predictor.labels)} labels"


def resolve(settings: LoaderSettings) -> LoaderSettings:
    """Fill in source, labels and checksum from model_db when the model is named rather than located."""
    if settings.model_name and settings.model_db_url:
        try:
            with ModelRegistry(settings.model_db_url, settings.timeout) as registry:
                experiment = registry.latest_experiment(settings.model_project, settings.model_name)
        except (RegistryError, httpx.HTTPError) as error:
            raise LoadError(f"model_db at {settings.model_db_url}: {error}") from None
        paths = experiment.get("artifact_file_paths") or {}
        if "model" not in paths:
            raise LoadError(f"experiment {experiment['experiment_id']} of {settings.model_name} records no model path")
        logger.info(
            "model_db: %s/%s is experiment %s, version %s",
            settings.model_project,
            settings.model_name,
            experiment["experiment_id"],
            experiment["model_version_id"],
        )
        return settings.model_copy(
            update={
                "model_source": paths["model"],
                "label_source": paths.get("labels"),
                "model_sha256": settings.model_sha256 or paths.get("model_sha256"),
            }
        )
    if not settings.model_source:
        raise LoadError("say where the model is: MODEL_SOURCE, or MODEL_DB_URL with MODEL_NAME")
    return settings


def load(settings: LoaderSettings) -> None:
    settings = resolve(settings)
    model = fetch(settings.model_source, settings.timeout)
    checksum = hashlib.sha256(model).hexdigest()
    expected = expected_checksum(settings)
    if checksum != expected:
        raise LoadError(f"checksum mismatch for {settings.model_source}: expected {expected}, got {checksum}")
    labels = fetch(settings.label_source or beside(settings.model_source, "labels.json"), settings.timeout)

    settings.model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.model_dir, prefix=".incoming-") as incoming:
        staged_model, staged_labels = Path(incoming, "model.onnx"), Path(incoming, "labels.json")
        staged_model.write_bytes(model)
        staged_labels.write_bytes(labels)
        description = verify(staged_model, staged_labels, settings.expected_input_shape)
        # Labels first: the API starts on model.onnx, so the model's arrival means everything is there.
        os.replace(staged_labels, settings.model_dir / "labels.json")
        os.replace(staged_model, settings.model_dir / "model.onnx")
    logger.info(
        "loaded %s (sha256 %s, %s) into %s", settings.model_source, checksum[:12], description, settings.model_dir
    )


def main() -> int:
    configure_logging()
    try:
        load(LoaderSettings())
    except LoadError as error:
        logger.error("model loader failed: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
