"""The cache floor: the least a cache hit costs on the serving stack, a bare Redis GET behind a JSON POST.

One route, POST /get {"data": "<key>"}: the body parsed by FastAPI as the proxy's is, one GET of the key
`<CACHE_NAMESPACE>:<key>` in Redis (the async client the cache uses, from REDIS_URL), and the stored bytes answered
as they are (404 if absent). It runs in `create_service_app` (the proxy's middleware, metrics and error handlers)
under the same gunicorn config, worker class and worker count, so a cache pattern's hit beside it shows what the
pattern adds to the GET itself: decoding the entry, building the answer (and, for the data cache, calling pred).

    gunicorn -c python:mlpatterns.serving.gunicorn_conf "mlpatterns.bench.cache_get:create_app()"
"""

from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Response
from pydantic import BaseModel, Field

from mlpatterns.errors import NotFound
from mlpatterns.redis_store import RedisSettings, async_client
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import HttpServiceSettings


class CacheGetSettings(HttpServiceSettings, RedisSettings):
    api_title: str = "bench: bare Redis GET"
    cache_namespace: str = Field("prediction", description="The namespace of the keys read.")


class Key(BaseModel):
    data: str = Field(max_length=100)


def create_app(settings: CacheGetSettings | None = None) -> FastAPI:
    settings = settings or CacheGetSettings()
    client = async_client(settings)

    def add_routes(router: APIRouter) -> None:
        @router.post("/get")
        async def get(key: Key) -> Response:
            value = await client.get(f"{settings.cache_namespace}:{key.data}")
            if value is None:
                raise NotFound(f"no key {settings.cache_namespace}:{key.data}")
            return Response(value, media_type="application/octet-stream")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await client.aclose()

    return create_service_app(settings, add_routes, lifespan=lifespan)
