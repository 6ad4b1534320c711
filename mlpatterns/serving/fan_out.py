"""A proxy that sends each request to several backends at once and keeps each backend's failure as its own part.

Chapter 4's microservice horizontal pattern passes the backends' answers on (and picks the surest label);
chapter 6's parameter-based pattern turns them into decisions by per-backend parameters. Both are this fan-out
in front of the three one-vs-rest iris services (`mlpatterns.serving.app` around `iris_binary_<species>`, each
answering `{"prediction": [[p_not, p_is], ...]}`); what they make of the answers is all each pattern writes:

    app = create_fan_out_app(settings, discover_backends(os.environ), add_routes)

    async def predict(body: calls.PredictRequest):  # in the pattern's add_routes(router, calls)
        replies = await fan_out(calls.upstreams, calls.predict(calls.checked(body.data)))
        return fan_out_response(parts(replies), replies)

    add_post_routes(router, [("/predict", predict, FanOutAnswer)], responses=FAN_OUT_ERRORS)

(`add_post_routes`: the service's fast lane answers these POST routes ahead of FastAPI's routing, which for one
iris row costs about as much as the proxy's own part of the three calls.)

Backends are found in the environment, as in the original samples: every variable `SERVICE_<NAME>` is one backend,
named `<name>` in lower case, at the URL it holds (`SERVICE_SETOSA=http://setosa:8000`; the original's
`setosa:8000` means http:// too). Each is called through the core's client (`mlpatterns.client`) with its own
time budget, all of them concurrently (asyncio.gather), so a request takes as long as the slowest backend, not as
long as all of them together, and a backend that is down or slow costs its own part of the answer, not the answer:

    {"setosa": Reply(status=200, seconds=0.004, answer={"prediction": [[0.02, 0.98]]}),
     "virginica": Reply(status=504, seconds=2.0, detail="upstream 'virginica' did not answer within 2.0 s")}

A failed backend's status is 503 unreachable, 504 too slow, 502 a wrong answer, or the 4xx it answered; `seconds`
runs from sending to its answer or failure, and the `Server-Timing` header of `fan_out_response` carries the same
times in ms. Only when no backend answers is the request itself an error: the backends' 4xx when they refused the
input, else a 503 naming each backend and why.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field

from mlpatterns import metrics
from mlpatterns.client import Upstream, UpstreamRefused, Upstreams, UpstreamSettings
from mlpatterns.errors import BadGateway, PatternError, PayloadTooLarge, Unavailable, error_responses
from mlpatterns.predictor import value_limit
from mlpatterns.serving.app import JSONAnswer
from mlpatterns.serving.schemas import Health, predict_request
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import IRIS_SAMPLE, HttpServiceSettings

logger = logging.getLogger(__name__)

BACKEND_SECONDS = metrics.histogram(
    "proxy_backend_seconds", "Time from sending a request to a backend to its answer or failure", ["backend", "status"]
)
_backend_seconds = metrics.DeferredChildren(BACKEND_SECONDS)

PREFIX = "SERVICE_"
ROW_WIDTH = 4  # the iris features every backend takes
POSITIVE = 1  # the class "is this species" of each one-vs-rest model (mlpatterns/training/iris.py)
# The backends' models take float32: a number beyond its range is refused by them, and the proxy's schema says so.
FLOAT32_LIMIT = value_limit(np.float32)

Call = Callable[[Upstream], Awaitable[Any]]


class FanOutSettings(HttpServiceSettings, UpstreamSettings):
    """A fan-out proxy's settings; its backends come from the SERVICE_* variables (`discover_backends`)."""

    backend_timeout_seconds: float = Field(
        2.0, gt=0, description="Each backend's budget per request, retries included; then it is named as timed out."
    )
    max_batch_rows: int = Field(10_000, gt=0, description="Batches with more rows are refused with 413.")
    sample_input: list = Field(IRIS_SAMPLE, description="The batch that /predict/post/test sends to every backend.")


def discover_backends(environ: Mapping[str, str]) -> dict[str, str]:
    """Backend name -> base URL, from the SERVICE_* variables, in name order; none at all is an error."""
    backends = {}
    for key, value in sorted(environ.items()):
        name = key.removeprefix(PREFIX).lower()
        if key.startswith(PREFIX) and name and value:
            backends[name] = value if "://" in value else f"http://{value}"
    if not backends:
        raise RuntimeError(f"no backend: set one {PREFIX}<NAME>=<url> variable per backend, e.g. SERVICE_SETOSA")
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


async def fan_out(upstreams: Mapping[str, Upstream], call: Call) -> dict[str, Reply]:
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
        _backend_seconds[upstream.name, str(status)].observe(seconds)
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


def fan_out_response(content: Any, replies: dict[str, Reply]) -> Response:
    """`content` as JSON, with each backend's time in a `Server-Timing` header."""
    timing = ", ".join(f"{name};dur={reply.seconds * 1000:.1f}" for name, reply in replies.items())
    response = JSONAnswer(orjson.dumps(content))
    response.raw_headers.append((b"server-timing", timing.encode()))
    return response


def parts(replies: dict[str, Reply]) -> dict:
    return {name: reply.part() for name, reply in replies.items()}


class BinaryScores(BaseModel):
    """What a backend's /predict and /predict/test answer: [p_not, p_is] per row."""

    prediction: list[tuple[float, float]]


class BackendCalls:
    """The calls a proxy makes to each backend, within the per-backend budget, and its request body's schema."""

    def __init__(self, settings: FanOutSettings):
        self.state = None  # the app's state, once the app is built: its lifespan opens the upstreams there
        self.timeout = settings.backend_timeout_seconds
        self.max_rows = settings.max_batch_rows
        self.PredictRequest = predict_request((ROW_WIDTH,), max_items=self.max_rows, value_limit=FLOAT32_LIMIT)

    @property
    def upstreams(self) -> Upstreams:
        """Every backend's client, opened by the app's lifespan in each worker (`app.state.upstreams`)."""
        return self.state.upstreams

    def get(self, path: str, model: type[BaseModel] | None = None) -> Call:
        async def get(upstream: Upstream) -> Any:
            answer = await upstream.get(path, model=model, timeout=self.timeout)
            return answer if model is None else answer.model_dump()

        return get

    def predict(self, data: list) -> Call:
        """POST the batch to each backend's /predict; an answer with another number of rows is a 502."""
        content = orjson.dumps({"data": data})  # once for all the backends

        async def predict(upstream: Upstream) -> dict:
            answer = await upstream.post(
                "/predict",
                content=content,
                headers={"content-type": "application/json"},
                model=BinaryScores,
                timeout=self.timeout,
            )
            if len(answer.prediction) != len(data):
                raise BadGateway(f"upstream {upstream.name!r} answered {len(answer.prediction)} rows for {len(data)}")
            return {"prediction": answer.prediction}  # what answer.model_dump() gives, for half the cost

        return predict

    def checked(self, data: list) -> list:
        if len(data) > self.max_rows:
            raise PayloadTooLarge(f"a batch holds at most {self.max_rows} rows; got {len(data)}")
        return data


# -- the app -----------------------------------------------------------------------------------------------


class BackendPart(BaseModel):
    """One backend's part of an answer: its own answer's fields (e.g. `prediction`, `health`) when it answered."""

    model_config = ConfigDict(extra="allow")

    status: int = Field(description="200, or why it failed: 503 unreachable, 504 too slow, 502 a wrong answer, 4xx.")
    seconds: float = Field(description="From sending the request to the backend's answer or failure.")
    detail: Any = Field(None, description="Why it failed (absent when it answered).")


FanOutAnswer = dict[str, BackendPart]
FAN_OUT_ERRORS = error_responses(503)


def create_fan_out_app(
    settings: FanOutSettings, backends: dict[str, str], add_routes: Callable[[APIRouter, BackendCalls], None]
) -> FastAPI:
    """A proxy in front of `backends` (name -> URL): `/health` (its own), `/health/all` (every backend's), then
    the pattern's routes, which reach the backends as `calls.upstreams`."""
    calls = BackendCalls(settings)

    def add_all_routes(router: APIRouter) -> None:
        @router.get("/health", response_model=Health)
        def health():
            return {"health": "ok"}

        @router.get("/health/all", response_model=FanOutAnswer, responses=FAN_OUT_ERRORS)
        async def health_all():
            replies = await fan_out(calls.upstreams, calls.get("/health"))
            return fan_out_response(parts(replies), replies)

        add_routes(router, calls)

    app = create_service_app(settings, add_all_routes, upstreams=backends)
    calls.state = app.state
    logger.info("backends: %s", ", ".join(f"{name} at {url}" for name, url in backends.items()))
    return app
