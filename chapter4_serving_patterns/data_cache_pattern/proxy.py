"""The data cache pattern's proxy: the model's input for an item, from Redis when it was prepared before.

    POST /predict  {"data": "0003"}  ->  {"prediction": [[p0, ..., p9]]}    X-Cache: miss (the first time), then hit

On a miss the proxy loads the item (a 512x512 JPEG), decodes and resizes it to the model's (3, 32, 32) float32
tensor and stores that under `data:0003`, for CACHE_TTL_SECONDS, as numpy's .npy: the 12,288 raw bytes with
their dtype and shape in a short header (the original stored the tensor as a JSON list of floats, megabytes of
text to write and parse). On a hit the item is neither read nor decoded; either way the tensor goes to the
prediction service (pred), which is asked every time: the answer follows the model, the input is what is saved.
A posted image (`image_data`) is cached by the digest of its bytes. With Redis unreachable the proxy
preprocesses every time (`X-Cache: bypass`). The shared routes, the loading and the call to pred are the core's
(`mlpatterns.serving.item_proxy`).
"""

from fastapi import FastAPI, Request

from mlpatterns.cache import Cache
from mlpatterns.serving.item_proxy import ItemProxy, ItemProxySettings, Prediction, Source, create_item_proxy_app


class DataCacheSettings(ItemProxySettings):
    api_title: str = "data cache pattern"


async def answer(proxy: ItemProxy, cache: Cache, request: Request, source: Source) -> tuple[Prediction, str]:
    # On a miss: load, decode, resize (item_preprocess_total counts it), stored before the answer (not with Redis
    # down); a burst of misses for one item prepares it once.
    tensor, result = await cache.lookup_or_fill(source.key, lambda: proxy.tensor(source))
    return await proxy.predict(request, tensor), result  # the model is asked every time


def create_app(settings: DataCacheSettings | None = None) -> FastAPI:
    return create_item_proxy_app(
        settings or DataCacheSettings(),
        answer,
        namespace="data",
        caches="preprocessed inputs: (3, 32, 32) float32 .npy",
    )
