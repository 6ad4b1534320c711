"""The web single pattern's service: the shared serving app around the iris SVC model, nothing more.

gunicorn runs `create_app()` once in each worker process, so every worker loads the model for itself and the
pattern scales by adding workers (one host) or replicas (Kubernetes).
"""

from fastapi import FastAPI

from mlpatterns.serving.app import create_serving_app
from mlpatterns.settings import ModelServingSettings


def create_app() -> FastAPI:
    return create_serving_app(ModelServingSettings())
