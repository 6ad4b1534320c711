"""The model-in-image service: the shared serving app with nothing configured from outside.

The model sits in the image at the settings' default path (models/iris_svc/model.onnx under /app), put there
by the image's build stage; no environment variable, volume or download tells the service where it is.
"""

from fastapi import FastAPI

from mlpatterns.serving.app import create_serving_app
from mlpatterns.settings import ModelServingSettings


def create_app() -> FastAPI:
    return create_serving_app(ModelServingSettings())
