"""The service the pipeline builds: the shared serving app around the cifar10 model, for batches of images.

    POST /predict        {"data": [image, ...]}  ->  {"prediction": [[p0, ..., p9], ...]}
    POST /predict/label  {"data": [image, ...]}  ->  {"prediction": ["cat", ...]}

An image is CIFAR-10's own layout, channels x rows x columns (3 x 32 x 32), of raw pixel values 0..255: the
model normalises them itself. The shared app takes its request schema from the model's input shape, so only
the defaults differ from the web single pattern's.
"""

from pathlib import Path

from fastapi import FastAPI
from pydantic import Field

from mlpatterns.serving.app import create_serving_app
from mlpatterns.settings import ModelPath, ModelServingSettings

BLACK_IMAGE = [[[0.0] * 32 for _ in range(32)] for _ in range(3)]


class ImageModelServingSettings(ModelServingSettings):
    """The shared serving settings with this service's defaults (a JSON image is ~15 kB)."""

    model_path: ModelPath = Path("models/cifar10/model.onnx")  # where the pipeline's build step puts it
    sample_input: list = Field([BLACK_IMAGE], description="The example batch of /metadata and /predict/test.")
    api_title: str = "cifar10 image classifier"
    max_body_bytes: int = Field(8 * 1_048_576, gt=0, description="Larger request bodies are refused with 413.")
    max_batch_rows: int = Field(256, gt=0, description="Batches with more images are refused with 413.")


def create_app(settings: ImageModelServingSettings | None = None) -> FastAPI:
    return create_serving_app(settings or ImageModelServingSettings())
