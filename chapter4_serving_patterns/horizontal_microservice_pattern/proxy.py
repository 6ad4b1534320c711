"""The proxy: each request goes to every backend at once, and their answers are combined into one.

Backends are found in the environment, as in the original sample: every variable `SERVICE_<NAME>` is one backend,
named `<name>` in lower case, at the URL it holds (`SERVICE_SETOSA=http://setosa:8000`; the original's
`setosa:8000` means http:// too). Each is called through the core's client (`mlpatterns.client`) with its own
time budget, all of them concurrently (asyncio.gather), so a request takes as long as the slowest backend, not as
long as all of them together, and a backend that is down or slow costs its own part of the answer, not the answer:

    {"setosa": {"prediction": [[0.02, 0.98]], "status": 200, "seconds": 0.004},
     "versicolor": {"prediction": [[0.95, 0.05]], "status": 200, "seconds": 0.005},
     "virginica": {"status": 504, "seconds": 2.0, "detail": "upstream 'virginica' did not answer within 2.0 s"}}

Each backend's part is its own JSON answer with `status` (200, or the error status: 503 unreachable, 504 too
slow, 502 a wrong answer, a 4xx passed on) and `seconds` (from sending to its answer or failure) added, and
`detail` (why) instead of the answer when it failed. The `Server-Timing` header carries the same times in ms.
Only when no backend answers is the request itself an error: the backends' 4xx when they refused the input,
else a 503 naming each backend and why.
"""

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from mlpatterns import metrics
from mlpatterns.client import Upstream, UpstreamRefused, UpstreamSettings
from mlpatterns.errors import BadGateway, PatternError, PayloadTooLarge, Unavailable, error_responses
from mlpatterns.serving.app import value_limit
from mlpatterns.serving.schemas import Health, predict_request
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import IRIS_SAMPLE, HttpServiceSettings

logger = logging.getLogger(__name__)

BACKEND_SECONDS = metrics.histogram(
    "proxy_backend_seconds", "Time from sending a request to a backend to its answer or failure", ["backend", "status"]
)

PREFIX = "SERVICE_"
ROW_WIDTH = 4  # the iris features every backend takes
POSITIVE = 1  # the class "is this species" of each one-vs-rest model (mlpatterns/training/iris.py)
# The backends' models take float32: a number beyond its range is refused by them, and the proxy's schema says so.
FLOAT32_LIMIT = value_limit(np.float32)


class ProxySettings(HttpServiceSettings, UpstreamSettings):
    """The proxy's settings; its backends come from the SERVICE_* variables (`discover_backends`)."""

    backend_timeout_seconds: float = Field(
        2.0, gt=0, description="Each backend's budget per request, retries included; then it is named as timed out."
    )
    max_batch_rows: int = Field(10_000, gt=0, description="Batches with more rows are refused with 413.")
    sample_input: list = Field(IRIS_SAMPLE, description="The batch that /predict/post/test sends to every backend.")


def discover_backends(environ: Mapping[str, str]) -> dict[str, str]:
    """Backend name -> base URL, from the SERVICE_* variables, in name order."""
    backends = {}
    for key, value in sorted(environ.items()):
        name = key.removeprefix(PREFIX).lower()
        if key.startswith(PREFIX) and name and value:
            backends[name] = value if "://" in value else f"http://{value}"
    return backends


# -- the fan-out -------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """One backend's part of a fan-out: its answer, or the status and detail of its failure."""

    status: int
    seconds: float
    answer: Any = None
    detail: Any = None

    @property
    def ok(self) -> bool:
        return self.answer is not None

    def part(self, with_answer: bool = True) -> dict:
        times = {"status": self.status, "seconds": round(self.seconds, 4)}
        if not self.ok:
            return {**times, "detail": self.detail}
        return {**self.answer, **times} if with_answer else times


async def fan_out(upstreams: Mapping[str, Upstream], call: Callable[[Upstream], Awaitable[Any]]) -> dict[str, Reply]:
    """`call(upstream)` on every backend concurrently; each failure is caught and becomes that backend's reply."""

    async def timed(upstream: Upstream) -> Reply:
        start = time.perf_counter()
        try:
            answer = await call(upstream)
            status, detail = 200, None
        except PatternError as failure:  # refused (4xx), unreachable (503), too slow (504), wrong answer (502)
            answer, status, detail = None, failure.status_code, failure.detail
            if status >= 500:
                logger.warning("backend %r failed: %s", upstream.name, detail)
        seconds = time.perf_counter() - start
        BACKEND_SECONDS.labels(upstream.name, str(status)).observe(seconds)
        return Reply(status, seconds, answer, detail)

    replies = await asyncio.gather(*(timed(upstream) for upstream in upstreams.values()))
    replies = dict(zip(upstreams, replies, strict=True))
    if not any(reply.ok for reply in replies.values()):
        refused = [(name, reply) for name, reply in replies.items() if 400 <= reply.status < 500]
        if refused:  # the input is wrong: the caller is told why, as the backend said it
            name, reply = refused[0]
            raise UpstreamRefused(name, reply.status, reply.detail)
        raise Unavailable("no backend answered: " + "; ".join(str(reply.detail) for reply in replies.values()))
    return replies


def fan_out_response(content: dict, replies: dict[str, Reply]) -> Response:
    timing = ", ".join(f"{name};dur={reply.seconds * 1000:.1f}" for name, reply in replies.items())
    return Response(orjson.dumps(content), media_type="application/json", headers={"Server-Timing": timing})


def parts(replies: dict[str, Reply]) -> dict:
    return {name: reply.part() for name, reply in replies.items()}


class BinaryScores(BaseModel):
    """What a backend's /predict answers: [p_not, p_is] per row."""

    prediction: list[tuple[float, float]]


def best_labels(replies: dict[str, Reply]) -> list[dict]:
    """For every row, the backend whose positive-class probability is highest (the first of equals), and it."""
    answered = {name: reply.answer["prediction"] for name, reply in replies.items() if reply.ok}
    rows = len(next(iter(answered.values())))  # the same in every answer: checked as each arrived
    best = []
    for row in range(rows):
        name = max(answered, key=lambda name: answered[name][row][POSITIVE])
        best.append({"label": name, "proba": answered[name][row][POSITIVE]})
    return best


# -- the API -----------------------------------------------------------------------------------------------


class BackendPart(BaseModel):
    """One backend's part of an answer: its own answer's fields (e.g. `prediction`, `health`) when it answered."""

    model_config = ConfigDict(extra="allow")

    status: int = Field(description="200, or why it failed: 503 unreachable, 504 too slow, 502 a wrong answer, 4xx.")
    seconds: float = Field(description="From sending the request to the backend's answer or failure.")
    detail: Any = Field(None, description="Why it failed (absent when it answered).")


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


FanOutAnswer = dict[str, BackendPart]


def add_proxy_routes(router: APIRouter, settings: ProxySettings, backends: dict[str, str]) -> None:
    timeout = settings.backend_timeout_seconds
    PredictRequest = predict_request((ROW_WIDTH,), max_items=settings.max_batch_rows, value_limit=FLOAT32_LIMIT)
    fan_out_errors = error_responses(503)

    def upstreams(request: Request) -> Mapping[str, Upstream]:
        return request.app.state.upstreams

    def get_each(path: str) -> Callable[[Upstream], Awaitable[Any]]:
        return lambda upstream: upstream.get(path, timeout=timeout)

    def predict_each(data: list) -> Callable[[Upstream], Awaitable[Any]]:
        content = orjson.dumps({"data": data})  # once for all the backends

        async def predict(upstream: Upstream) -> dict:
            answer = await upstream.post(
                "/predict",
                content=content,
                headers={"content-type": "application/json"},
                model=BinaryScores,
                timeout=timeout,
            )
            if len(answer.prediction) != len(data):
                raise BadGateway(f"upstream {upstream.name!r} answered {len(answer.prediction)} rows for {len(data)}")
            return answer.model_dump()

        return predict

    def checked(data: list) -> list:
        if len(data) > settings.max_batch_rows:
            raise PayloadTooLarge(f"a batch holds at most {settings.max_batch_rows} rows; got {len(data)}")
        return data

    @router.get("/health", response_model=Health)
    def health():
        return {"health": "ok"}

    @router.get("/metadata", response_model=ProxyMetadata)
    def metadata():
        return {"backends": backends, "backend_timeout_seconds": timeout, "data_sample": settings.sample_input}

    @router.get("/health/all", response_model=FanOutAnswer, responses=fan_out_errors)
    async def health_all(request: Request):
        replies = await fan_out(upstreams(request), get_each("/health"))
        return fan_out_response(parts(replies), replies)

    @router.get("/predict/get/test", response_model=FanOutAnswer, responses=fan_out_errors)
    async def predict_get_test(request: Request):
        replies = await fan_out(upstreams(request), get_each("/predict/test"))
        return fan_out_response(parts(replies), replies)

    @router.get("/predict/post/test", response_model=FanOutAnswer, responses=fan_out_errors)
    async def predict_post_test(request: Request):
        replies = await fan_out(upstreams(request), predict_each(settings.sample_input))
        return fan_out_response(parts(replies), replies)

    @router.post("/predict", response_model=FanOutAnswer, responses=fan_out_errors)
    async def predict(request: Request, body: PredictRequest):
        replies = await fan_out(upstreams(request), predict_each(checked(body.data)))
        return fan_out_response(parts(replies), replies)

    @router.post("/predict/label", response_model=LabelAnswer, responses=fan_out_errors)
    async def predict_label(request: Request, body: PredictRequest):
        replies = await fan_out(upstreams(request), predict_each(checked(body.data)))
        best = best_labels(replies)
        content = {
            "prediction": best[0] if len(best) == 1 else best,
            "backends": {name: reply.part(with_answer=False) for name, reply in replies.items()},
        }
        return fan_out_response(content, replies)


def create_app(environ: Mapping[str, str] = os.environ) -> FastAPI:
    settings = ProxySettings()
    backends = discover_backends(environ)
    if not backends:
        raise RuntimeError(f"no backend: set one {PREFIX}<NAME>=<url> variable per backend, e.g. SERVICE_SETOSA")
    app = create_service_app(settings, lambda router: add_proxy_routes(router, settings, backends), upstreams=backends)
    logger.info("backends: %s", ", ".join(f"{name} at {url}" for name, url in backends.items()))
    return app
