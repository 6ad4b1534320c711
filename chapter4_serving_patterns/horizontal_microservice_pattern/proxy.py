"""The proxy: each request goes to every backend at once, and their answers are combined into one.

The fan-out is the core's (`mlpatterns/serving/fan_out.py`, shared with chapter 6's parameter-based pattern):
backends from the SERVICE_* variables, all asked concurrently, each with its own time budget, so a backend that
is down or slow costs its own part of the answer, not the answer. What this pattern makes of the answers:

    POST /predict        every backend's answer as it gave it, with its status and time:
    {"setosa": {"prediction": [[0.02, 0.98]], "status": 200, "seconds": 0.004},
     "versicolor": {"prediction": [[0.95, 0.05]], "status": 200, "seconds": 0.005},
     "virginica": {"status": 504, "seconds": 2.0, "detail": "upstream 'virginica' did not answer within 2.0 s"}}

    POST /predict/label  per row, the backend whose model is surest the row is its species (among those that
                         answered), and each backend's status and time
"""

import os
from collections.abc import Mapping

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from mlpatterns.serving.app import add_post_routes
from mlpatterns.serving.fan_out import (
    FAN_OUT_ERRORS,
    POSITIVE,
    BackendCalls,
    BackendPart,
    FanOutAnswer,
    FanOutSettings,
    Reply,
    create_fan_out_app,
    discover_backends,
    fan_out,
    fan_out_response,
    parts,
)


def best_labels(replies: dict[str, Reply]) -> list[dict]:
    """For every row, the backend whose positive-class probability is highest (the first of equals), and it."""
    answered = {name: reply.answer["prediction"] for name, reply in replies.items() if reply.ok}
    rows = len(next(iter(answered.values())))  # the same in every answer: checked as each arrived
    best = []
    for row in range(rows):
        name = max(answered, key=lambda name: answered[name][row][POSITIVE])
        best.append({"label": name, "proba": answered[name][row][POSITIVE]})
    return best


class BestLabel(BaseModel):
    label: str = Field(description="The backend (species) whose model is surest the row is its own.")
    proba: float = Field(description="That model's probability of its species.")


class LabelAnswer(BaseModel):
    prediction: BestLabel | list[BestLabel] = Field(description="One object for a one-row batch, else one per row.")
    backends: dict[str, BackendPart] = Field(description="Each backend's status and time (its answer left out).")


class ProxyMetadata(BaseModel):
    backends: dict[str, str]
    backend_timeout_seconds: float
    data_sample: list


def add_proxy_routes(router: APIRouter, calls: BackendCalls, settings: FanOutSettings, backends: dict[str, str]):
    PredictRequest = calls.PredictRequest

    @router.get("/metadata", response_model=ProxyMetadata)
    def metadata():
        return {"backends": backends, "backend_timeout_seconds": calls.timeout, "data_sample": settings.sample_input}

    @router.get("/predict/get/test", response_model=FanOutAnswer, responses=FAN_OUT_ERRORS)
    async def predict_get_test():
        replies = await fan_out(calls.upstreams, calls.get("/predict/test"))
        return fan_out_response(parts(replies), replies)

    @router.get("/predict/post/test", response_model=FanOutAnswer, responses=FAN_OUT_ERRORS)
    async def predict_post_test():
        replies = await fan_out(calls.upstreams, calls.predict(settings.sample_input))
        return fan_out_response(parts(replies), replies)

    async def predict(body: PredictRequest):
        replies = await fan_out(calls.upstreams, calls.predict(calls.checked(body.data)))
        return fan_out_response(parts(replies), replies)

    async def predict_label(body: PredictRequest):
        replies = await fan_out(calls.upstreams, calls.predict(calls.checked(body.data)))
        best = best_labels(replies)
        content = {
            "prediction": best[0] if len(best) == 1 else best,
            "backends": {name: reply.part(with_answer=False) for name, reply in replies.items()},
        }
        return fan_out_response(content, replies)

    add_post_routes(
        router,
        [("/predict", predict, FanOutAnswer), ("/predict/label", predict_label, LabelAnswer)],
        responses=FAN_OUT_ERRORS,
    )


def create_app(environ: Mapping[str, str] = os.environ) -> FastAPI:
    settings = FanOutSettings()
    backends = discover_backends(environ)
    return create_fan_out_app(
        settings, backends, lambda router, calls: add_proxy_routes(router, calls, settings, backends)
    )
