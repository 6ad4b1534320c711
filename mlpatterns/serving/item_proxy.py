"""The proxy of the cache patterns: items named by id in, the prediction service's answer out, a cache between.

    POST /predict        {"data": "0003"} or {"image_data": "<base64 image>"}  ->  {"prediction": [[p0, ..., p9]]}
    POST /predict/label  the same                                              ->  {"prediction": "3"}
    GET  /predict/test, /predict/test/label   item "0000"
    GET  /label (the model's labels, from pred), /metadata, /health
    Every prediction's answer carries `X-Cache: hit | miss | bypass` (bypass: Redis unreachable, answered without it).

As in the book's prediction_cache and data_cache patterns, a request names an item the proxy holds
(`mlpatterns.items`: "0000" to "0007", 512x512 JPEGs of the digits 0 to 7); the proxy loads it, decodes and
resizes it to the model's 3x32x32 float32 tensor, and sends the tensor to the prediction service
(`mlpatterns.serving.tensor_service`) as raw bytes (`mlpatterns.tensors`). A posted image (`image_data`) takes
the same way; its cache key is the digest of its bytes (`mlpatterns.cache.digest`), an item's is its id.
An id of four digits that names no item is a 404 naming the items; any other id is a 422.

What makes each pattern is where its cache sits, and that is all a pattern writes: an `Answer`, given the
proxy, the cache and the request's `Source`, returns the `Prediction` and how the cache lookup went. The
prediction cache looks up the answer before anything else; the data cache looks up the tensor and still asks
the model:

    async def answer(proxy: ItemProxy, cache: Cache, request: Request, source: Source) -> tuple[Prediction, str]:
        # on a miss: load + decode + resize (item_preprocess_total counts it), stored; misses at once share it
        tensor, result = await cache.lookup_or_fill(source.key, lambda: proxy.tensor(source))
        return await proxy.predict(request, tensor), result

    app = create_item_proxy_app(settings, answer, namespace="data", caches="preprocessed inputs")
"""

import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Body, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from starlette.concurrency import run_in_threadpool

from mlpatterns import metrics
from mlpatterns.cache import BYPASS, HIT, MISS, Cache, CacheSettings, digest
from mlpatterns.client import UpstreamSettings
from mlpatterns.errors import InvalidInput, NotFound, error_responses
from mlpatterns.images import Base64Image, ImagePreprocessor, decode_base64
from mlpatterns.items import DEFAULT_ITEM, ItemId, ItemStore
from mlpatterns.serving.schemas import Health, TensorPrediction
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import HttpServiceSettings
from mlpatterns.tensors import encode_tensor

PREPROCESSED = metrics.counter(
    "item_preprocess_total",
    "Inputs loaded (an item) or decoded (a posted image) and resized into a tensor here",
    ["source"],
)
STAGE_SECONDS = metrics.histogram(
    "proxy_stage_seconds", "Time of each stage: preprocess (load, decode, resize) here, predict in pred", ["stage"]
)
CACHE_HEADER = "X-Cache"
CACHE_RESULTS = (HIT, MISS, BYPASS)


class ItemProxySettings(HttpServiceSettings, UpstreamSettings, CacheSettings):
    """The proxy: REDIS_URL, CACHE_TTL_SECONDS, CACHE_FAIL_OPEN (the cache), PREDICTION_URL (pred), PORT..."""

    prediction_url: str = Field("http://127.0.0.1:8001", description="The prediction service's base URL.")
    image_shape: tuple[int, int, int] = Field(
        (3, 32, 32), description="Channels, rows, columns of the tensor the model takes (JSON: [3, 32, 32])."
    )


class ItemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"data": "0003"}]})

    data: ItemId = DEFAULT_ITEM


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_data: Base64Image = Field(min_length=1, description="An image of the client's own instead of an item.")


def _kind(body) -> str:
    return "image" if isinstance(body, dict) and "image_data" in body else "item"


# One of the two bodies, chosen by its key, so that a bad body gets the errors of its own kind only.
PredictBody = Annotated[
    Annotated[Annotated[ItemRequest, Tag("item")] | Annotated[ImageRequest, Tag("image")], Discriminator(_kind)],
    Body(examples=[{"data": "0003"}]),
]


@dataclass(frozen=True)
class Source:
    """What a request asks about: its cache key and what to load on a miss."""

    key: str  # the item id ("0003"), or the digest of a posted image's bytes (32 hex digits)
    item_id: str | None = None
    image: bytes | None = None


class Prediction(BaseModel):
    """One input's answer, as a prediction cache stores it (JSON, about 200 bytes)."""

    scores: list[float] = Field(description="The probability of each label, in the model's label order.")
    label: str = Field(description="The most likely label.")


class ScoresAnswer(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"prediction": [[0.001, 0.002, 0.001, 0.99] + [0.001] * 6]}]}
    )

    prediction: list[list[float]] = Field(description="One row: the probability of each label.")


class LabelAnswer(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"prediction": "3"}]})

    prediction: str = Field(description="The most likely label.")


Answer = Callable[["ItemProxy", Cache, Request, Source], Awaitable[tuple[Prediction, str]]]


@contextmanager
def _named_image_data():
    """The image's errors name the field: "item 0 is not base64 ..." -> "image_data is not base64 ..."."""
    try:
        yield
    except InvalidInput as error:
        raise InvalidInput("image_data " + error.detail.removeprefix("item 0 ")) from None


class ItemProxy:
    """Loads and preprocesses inputs, and asks the prediction service (pred) about tensors."""

    def __init__(self, settings: ItemProxySettings, store: ItemStore | None = None):
        self.store = store or ItemStore()
        self.items = tuple(self.store.ids())  # shipped with the package: known at start
        self.preprocess = ImagePreprocessor(shape=settings.image_shape)

    def source(self, body: ItemRequest | ImageRequest) -> Source:
        """The request's Source; NotFound (404) for an id that names no item, before any cache lookup."""
        if isinstance(body, ImageRequest):
            with _named_image_data():
                image = decode_base64(body.image_data)
            return Source(key=digest(image), image=image)
        if body.data not in self.items:
            raise NotFound(f"no item {body.data!r}; the items are {', '.join(self.items)}")
        return Source(key=body.data, item_id=body.data)

    async def tensor(self, source: Source) -> np.ndarray:
        """The input as the model's (3, 32, 32) float32 tensor: the item's file read, decoded and resized."""
        start = time.perf_counter()
        # Decoding a 512x512 JPEG takes milliseconds: off the event loop.
        tensor = await run_in_threadpool(self._load_and_preprocess, source)
        STAGE_SECONDS.labels("preprocess").observe(time.perf_counter() - start)
        PREPROCESSED.labels("item" if source.item_id is not None else "image").inc()
        return tensor

    def _load_and_preprocess(self, source: Source) -> np.ndarray:
        if source.item_id is not None:
            return self.preprocess.pixels(self.store.read(source.item_id))
        with _named_image_data():  # bytes that are no image: a 422
            return self.preprocess.pixels(source.image)

    async def predict(self, request: Request, tensor: np.ndarray) -> Prediction:
        """pred's answer for one (3, 32, 32) tensor, sent as raw float32 bytes."""
        body, headers = encode_tensor(tensor[None])
        start = time.perf_counter()
        answer = await request.app.state.upstreams["pred"].post(
            "/predict", content=body, headers=headers, model=TensorPrediction
        )
        STAGE_SECONDS.labels("predict").observe(time.perf_counter() - start)
        return Prediction(scores=answer.prediction[0], label=answer.labels[0])


def cache_responses(*statuses: int) -> dict:
    """The OpenAPI responses of a prediction route: its X-Cache header, and its errors."""
    header = {
        CACHE_HEADER: {
            "description": "hit: answered from the cache; miss: computed and stored; "
            "bypass: Redis unreachable, answered without the cache.",
            "schema": {"type": "string", "enum": list(CACHE_RESULTS)},
        }
    }
    return {200: {"headers": header}, **error_responses(*statuses)}


def create_item_proxy_app(settings: ItemProxySettings, answer: Answer, *, namespace: str, caches: str) -> FastAPI:
    """The proxy's app: the shared routes around the pattern's `answer`, with a cache whose keys are
    `<namespace>:<key>`; `caches` says what it holds (in /metadata). Its connections close with the app."""
    proxy = ItemProxy(settings)
    cache = Cache.from_settings(settings, namespace)
    upstream_errors = (502, 503, 504)  # pred failed, is down, or is late

    async def respond(request: Request, body: ItemRequest | ImageRequest, scores: bool) -> Response:
        prediction, result = await answer(proxy, cache, request, proxy.source(body))
        content = {"prediction": [prediction.scores] if scores else prediction.label}
        return Response(orjson.dumps(content), media_type="application/json", headers={CACHE_HEADER: result})

    def add_routes(router: APIRouter) -> None:
        @router.get("/health", response_model=Health)
        def health():
            return {"health": "ok"}  # its own: pred or Redis down leaves the proxy up

        @router.get("/metadata")
        def metadata() -> dict:
            return {
                "data_type": "str",
                "data_structure": "an item id, or {'image_data': <base64 image>}",
                "data_sample": DEFAULT_ITEM,
                "items": list(proxy.items),
                "prediction_type": "float32",
                "prediction_structure": "(1, number of labels)",
                "cache": {
                    "holds": caches,
                    "key": f"{cache.namespace}:<item id, or the digest of a posted image>",
                    "ttl_seconds": settings.cache_ttl_seconds,
                    "fail_open": settings.cache_fail_open,
                },
                "prediction_service": settings.prediction_url,
            }

        @router.get("/label", response_model=dict[str, str], responses=error_responses(*upstream_errors))
        async def label(request: Request):
            return await request.app.state.upstreams["pred"].get("/label")  # the labels live with the model

        @router.get("/predict/test", response_model=ScoresAnswer, responses=cache_responses(*upstream_errors))
        async def predict_test(request: Request):
            return await respond(request, ItemRequest(data=DEFAULT_ITEM), scores=True)

        @router.get("/predict/test/label", response_model=LabelAnswer, responses=cache_responses(*upstream_errors))
        async def predict_test_label(request: Request):
            return await respond(request, ItemRequest(data=DEFAULT_ITEM), scores=False)

        @router.post("/predict", response_model=ScoresAnswer, responses=cache_responses(404, *upstream_errors))
        async def predict(request: Request, body: PredictBody):
            return await respond(request, body, scores=True)

        @router.post("/predict/label", response_model=LabelAnswer, responses=cache_responses(404, *upstream_errors))
        async def predict_label(request: Request, body: PredictBody):
            return await respond(request, body, scores=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await cache.close()

    return create_service_app(settings, add_routes, upstreams={"pred": settings.prediction_url}, lifespan=lifespan)
