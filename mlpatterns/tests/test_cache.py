"""The Redis cache helper against a real redis-server: values roundtrip, keys, TTL, counts, and Redis down."""

import asyncio

import numpy as np
import pytest
import redis
from fastapi import APIRouter
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from mlpatterns.cache import Cache, CacheSettings, digest
from mlpatterns.runner.backing import RedisServer, free_port
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import HttpServiceSettings

pytestmark = pytest.mark.anyio


@pytest.fixture
def stopped_redis_url():
    """The URL of a Redis that was there and has stopped."""
    server = RedisServer(free_port()).start()
    server.stop()
    return server.url


@pytest.fixture
def anyio_backend():
    return "asyncio"


def lookups(namespace: str, result: str) -> float:
    return REGISTRY.get_sample_value("cache_lookups_total", {"cache": namespace, "result": result}) or 0.0


def errors(namespace: str, operation: str) -> float:
    return REGISTRY.get_sample_value("cache_errors_total", {"cache": namespace, "operation": operation}) or 0.0


async def test_float32_tensor_roundtrips_bit_exact_as_compact_binary(redis_url):
    cache = Cache.from_settings(CacheSettings(redis_url=redis_url), "data")
    tensor = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    tensor[0, 0, 0, :3] = [np.nan, np.inf, -0.0]
    await cache.set("0003", tensor)

    back = await cache.get("0003")

    assert back.dtype == np.float32 and back.shape == (1, 3, 32, 32)
    assert back.tobytes() == tensor.tobytes()
    stored = await cache.redis.get("data:0003")  # the key scheme: <namespace>:<key>
    assert tensor.nbytes < len(stored) < tensor.nbytes + 200  # raw bytes and a short header, no text
    assert 0 < await cache.redis.pttl("data:0003") <= 3_600_000
    await cache.close()


async def test_json_and_bytes_roundtrip(redis_url):
    cache = Cache.from_settings(CacheSettings(redis_url=redis_url), "values")
    prediction = {"prediction": [[0.1, 0.9]], "labels": ["setosa"], "n": 3}
    await cache.set("json", prediction)
    await cache.set("bytes", b"\x00\xffraw")
    await cache.set("array-in-json", {"scores": np.array([0.5, 0.25], dtype=np.float32)})

    assert await cache.get("json") == prediction
    assert await cache.get("bytes") == b"\x00\xffraw"
    assert await cache.get("array-in-json") == {"scores": [0.5, 0.25]}
    await cache.close()


async def test_get_or_compute_computes_once_and_counts_hits_and_misses(redis_url):
    cache = Cache.from_settings(CacheSettings(redis_url=redis_url), "prediction")
    calls = []

    async def predict():
        calls.append(1)
        return [[0.2, 0.8]]

    first = await cache.get_or_compute("0000", predict)
    second = await cache.get_or_compute("0000", predict)
    third = await cache.get_or_compute("0001", lambda: [[1.0, 0.0]])  # a sync compute works too

    assert first == second == [[0.2, 0.8]] and third == [[1.0, 0.0]]
    assert len(calls) == 1
    assert (lookups("prediction", "hit"), lookups("prediction", "miss")) == (1, 2)
    await cache.close()


async def test_entries_expire_after_their_ttl(redis_url):
    cache = Cache.from_settings(CacheSettings(redis_url=redis_url, cache_ttl_seconds=0.2), "short")
    await cache.set("k", [1])
    assert await cache.get("k") == [1]
    await asyncio.sleep(0.35)
    assert await cache.get("k") is None
    await cache.close()


def test_digest_is_stable_and_tells_inputs_apart():
    assert digest({"a": 1, "b": [2, 3]}) == digest({"b": [2, 3], "a": 1})  # key order does not matter
    assert digest({"a": 1}) != digest({"a": 2})
    array = np.arange(6, dtype=np.float32)
    assert digest(array) == digest(array.copy()) != digest(array.reshape(2, 3)) != digest(array.astype(np.float64))
    assert len(digest(b"image bytes")) == 32


async def test_fail_open_answers_from_compute_when_redis_is_down(stopped_redis_url):
    cache = Cache.from_settings(CacheSettings(redis_url=stopped_redis_url), "open")

    value = await cache.get_or_compute("0000", lambda: [[0.5, 0.5]])

    assert value == [[0.5, 0.5]]
    assert lookups("open", "miss") == 1
    assert (errors("open", "get"), errors("open", "set")) == (1, 0)  # no write tried: Redis failed a moment ago
    await cache.close()


async def test_fail_closed_raises_when_redis_is_down(stopped_redis_url):
    cache = Cache.from_settings(CacheSettings(redis_url=stopped_redis_url, cache_fail_open=False), "closed")
    with pytest.raises(redis.ConnectionError):
        await cache.get("0000")
    assert errors("closed", "get") == 1
    await cache.close()


def test_a_fail_closed_cache_in_an_app_answers_503(stopped_redis_url):
    cache = Cache.from_settings(CacheSettings(redis_url=stopped_redis_url, cache_fail_open=False), "app")

    def routes(router: APIRouter) -> None:
        @router.get("/item/{item_id}")
        async def item(item_id: str):
            return {"value": await cache.get_or_compute(item_id, lambda: 1)}

    with TestClient(create_service_app(HttpServiceSettings(), routes)) as client:
        response = client.get("/item/0000")

    assert response.status_code == 503
    assert response.json() == {"detail": "redis is unavailable; try again later"}


async def test_lookup_says_hit_miss_or_bypass(redis_url, stopped_redis_url):
    cache = Cache.from_settings(CacheSettings(redis_url=redis_url), "lookup")
    assert await cache.lookup("0000") == (None, "miss")
    assert await cache.set("0000", {"label": "0"}) is True
    assert await cache.lookup("0000") == ({"label": "0"}, "hit")
    await cache.close()
    down = Cache.from_settings(CacheSettings(redis_url=stopped_redis_url), "lookup-down")
    assert await down.lookup("0000") == (None, "bypass")  # failing open: the caller answers without the cache
    assert await down.set("0000", {"label": "0"}) is False
    assert lookups("lookup-down", "miss") == 1
    await down.close()


@pytest.mark.parametrize("stored", [b"x-not-ours", b"n\x93NUMPY cut short", b'j{"cut": ', b""])
async def test_an_unreadable_entry_is_a_counted_miss_and_the_next_set_replaces_it(redis_url, stored):
    cache = Cache.from_settings(CacheSettings(redis_url=redis_url), "corrupt")
    await cache.redis.set("corrupt:0001", stored)
    before_miss, before_errors = lookups("corrupt", "miss"), errors("corrupt", "decode")

    assert await cache.lookup("0001") == (None, "miss")
    assert lookups("corrupt", "miss") == before_miss + 1
    assert errors("corrupt", "decode") == before_errors + 1
    assert await cache.get_or_compute("0001", lambda: {"prediction": "1"}) == {"prediction": "1"}
    assert await cache.lookup("0001") == ({"prediction": "1"}, "hit")
    await cache.close()


async def test_misses_of_one_key_at_once_compute_it_once_and_share_its_value_or_its_error(redis_url):
    cache = Cache.from_settings(CacheSettings(redis_url=redis_url), "flight")
    calls = []

    async def slow_predict():
        calls.append(1)
        await asyncio.sleep(0.2)  # long enough for every caller below to miss and join
        return {"prediction": "7"}

    answers = await asyncio.gather(*(cache.lookup_or_fill("0007", slow_predict) for _ in range(20)))
    assert len(calls) == 1
    assert answers == [({"prediction": "7"}, "miss")] * 20
    assert await cache.lookup_or_fill("0007", slow_predict) == ({"prediction": "7"}, "hit")

    async def failing():
        calls.append(1)
        await asyncio.sleep(0.1)
        raise RuntimeError("pred is down")

    calls.clear()
    results = await asyncio.gather(*(cache.lookup_or_fill("0001", failing) for _ in range(5)), return_exceptions=True)
    assert len(calls) == 1 and all(isinstance(r, RuntimeError) for r in results)
    assert await cache.lookup_or_fill("0001", lambda: {"prediction": "1"}) == ({"prediction": "1"}, "miss")  # anew
    await cache.close()
