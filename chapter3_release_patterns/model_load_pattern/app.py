"""The model-load API: the shared serving app on whatever model the loader put into the shared volume.

MODEL_PATH points into that volume. The image itself holds no model, so the same image serves any model the
loader is told to fetch; changing the model is changing the loader's MODEL_SOURCE, not rebuilding.
"""

from fastapi import FastAPI

from mlpatterns.serving.app import create_serving_app
from mlpatterns.settings import ModelServingSettings


def create_app() -> FastAPI:
    return create_serving_app(ModelServingSettings())
