"""One backend of the pattern: the shared serving app around one one-vs-rest iris model.

The three backends (setosa, versicolor, virginica) are this one module, in one image, started three times with
another MODEL_PATH; each answers `{"prediction": [[p_not, p_is], ...]}`, class 1 being "is this species".
"""

import asyncio
from pathlib import Path

from fastapi import FastAPI
from pydantic import Field
from starlette.types import ASGIApp, Receive, Scope, Send

from mlpatterns.serving.app import create_serving_app
from mlpatterns.settings import ModelPath, ModelServingSettings


class BackendSettings(ModelServingSettings):
    model_path: ModelPath = Path("models/iris_binary_setosa/model.onnx")
    response_delay_seconds: float = Field(
        0.0,
        ge=0,
        description="Tests and demos only: seconds every /predict... answer waits, to make a backend slow on "
        "purpose (the proxy's parallelism and its per-backend timeout are shown with it). /health is not delayed.",
    )


class ResponseDelay:
    """Waits `seconds` (without blocking the event loop) before a prediction route answers."""

    def __init__(self, app: ASGIApp, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/predict"):
            await asyncio.sleep(self.seconds)
        await self.app(scope, receive, send)


def create_app() -> FastAPI:
    settings = BackendSettings()
    app = create_serving_app(settings)
    if settings.response_delay_seconds:
        app.add_middleware(ResponseDelay, seconds=settings.response_delay_seconds)
    return app
