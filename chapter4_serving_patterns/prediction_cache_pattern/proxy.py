"""The prediction cache pattern's proxy: the model's answer for an item, from Redis when it was asked before.

    POST /predict  {"data": "0003"}  ->  {"prediction": [[p0, ..., p9]]}    X-Cache: miss (the first time), then hit

On a miss the proxy loads the item, preprocesses it, asks the prediction service (pred) and stores the answer,
about 200 bytes of JSON under `prediction:0003`, for CACHE_TTL_SECONDS, before it answers: a request right after
finds it (the original stored it in a background task after the response, so a quick second request missed).
On a hit nothing else happens: no file read, no decoding, no call to pred. Misses of one item that arrive
together (in one worker process) share one call to pred. A posted image (`image_data`) is
cached by the digest of its bytes. With Redis unreachable the proxy answers from the model (`X-Cache: bypass`).
The shared routes, the loading and the call to pred are the core's (`mlpatterns.serving.item_proxy`).
"""

from fastapi import FastAPI, Request

from mlpatterns.cache import Cache
from mlpatterns.serving.item_proxy import ItemProxy, ItemProxySettings, Prediction, Source, create_item_proxy_app


class PredictionCacheSettings(ItemProxySettings):
    api_title: str = "prediction cache pattern"


async def answer(proxy: ItemProxy, cache: Cache, request: Request, source: Source) -> tuple[Prediction, str]:
    async def ask_the_model() -> dict:  # on a miss only: load, preprocess, ask pred
        return (await proxy.predict(request, await proxy.tensor(source))).model_dump()

    # Stored before the answer (not with Redis down); a burst of misses for one item asks the model once.
    cached, result = await cache.lookup_or_fill(source.key, ask_the_model)
    return Prediction.model_validate(cached), result


def create_app(settings: PredictionCacheSettings | None = None) -> FastAPI:
    return create_item_proxy_app(
        settings or PredictionCacheSettings(),
        answer,
        namespace="prediction",
        caches="predictions: the model's answer (JSON)",
    )
