"""A cache on Redis for predictions and preprocessed inputs: namespaced keys, a TTL, compact values, counted.

    cache = Cache.from_settings(CacheSettings(), "prediction")  # REDIS_URL, CACHE_TTL_SECONDS, CACHE_FAIL_OPEN
    scores = await cache.get_or_compute(item_id, lambda: predict(item_id))  # compute runs on a miss only
    tensor, result = await cache.lookup_or_fill(key, compute)  # and "hit", "miss" or "bypass" (an X-Cache header)
    tensor = await cache.get(digest(items))  # None on a miss
    await cache.set(digest(items), tensor)
    tensor, result = await cache.lookup(key)  # and how it went: "hit", "miss" or "bypass" (an X-Cache header)

Async (redis.asyncio): the callers are FastAPI routes. `compute` may return a value or an awaitable.

Key scheme: `<namespace>:<key>`. The namespace is the cache's name (`prediction`, `data`), so two patterns sharing
one Redis never read each other's entries. The key is an item id as given (`prediction:0003`), or for a posted
input `digest(value)`: the blake2b-128 hex digest of its canonical bytes (JSON with sorted keys for parsed JSON;
dtype, shape and raw bytes for an array), e.g. `data:5d41402abc4b2a76b9719d911017c592`.

Values, one tag byte then the body:
    b"n" + an array in numpy's .npy format: a short header with dtype and shape, then the raw bytes
           (read back bit-exact with allow_pickle=False; a (1, 3, 224, 224) float32 tensor is 602 kB, not 3 MB of JSON)
    b"j" + JSON by orjson (a dict, a list, numbers; numpy arrays inside become lists)
    b"b" + bytes as they are

Redis unreachable: with `fail_open` (the default) a lookup is a miss and a write is skipped, so the service still
answers from the model; the error is counted and a warning logged at most every 30 s. With `fail_open=False` the
Redis error propagates, and an app of `create_service_app` answers 503.

An entry that cannot be decoded (written by something else, or cut short) is a miss, counted as an error
(`operation="decode"`), and the next `set` overwrites it.

Metrics: `cache_lookups_total{cache, result="hit"|"miss"}`, `cache_errors_total{cache, operation="get"|"set"|"decode"}`.
"""

import asyncio
import hashlib
import inspect
import io
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
import redis
import redis.asyncio
from pydantic import Field

from mlpatterns import metrics
from mlpatterns.redis_store import RedisSettings, async_client

logger = logging.getLogger(__name__)

LOOKUPS = metrics.counter("cache_lookups_total", "Cache lookups, by result (hit or miss)", ["cache", "result"])
ERRORS = metrics.counter(
    "cache_errors_total", "Cache calls that failed (Redis unreachable, or an unreadable entry)", ["cache", "operation"]
)

_WARN_EVERY_SECONDS = 30.0
HIT, MISS, BYPASS = "hit", "miss", "bypass"  # what a lookup was (Cache.lookup)


class CacheSettings(RedisSettings):
    cache_ttl_seconds: float = Field(3600, gt=0, description="How long an entry stays.")
    cache_fail_open: bool = Field(
        True, description="With Redis down, treat lookups as misses (true) or fail the request with 503 (false)."
    )


def digest(value: Any) -> str:
    """A stable key for a posted input: equal inputs give equal digests, in every process and on every machine."""
    if isinstance(value, np.ndarray):
        data = f"{value.dtype.str}{value.shape}".encode() + np.ascontiguousarray(value).tobytes()
    elif isinstance(value, bytes):
        data = value
    else:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def encode(value: Any) -> bytes:
    if isinstance(value, np.ndarray):
        buffer = io.BytesIO()
        buffer.write(b"n")
        np.save(buffer, value, allow_pickle=False)
        return buffer.getvalue()
    if isinstance(value, bytes | bytearray | memoryview):
        return b"b" + bytes(value)
    return b"j" + orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def decode(data: bytes) -> Any:
    tag, body = data[:1], memoryview(data)[1:]
    if tag == b"n":
        return np.load(io.BytesIO(body), allow_pickle=False)
    if tag == b"j":
        return orjson.loads(body)
    if tag == b"b":
        return bytes(body)
    raise ValueError(f"not a value of mlpatterns.cache (tag {tag!r})")


class Cache:
    def __init__(
        self, client: redis.asyncio.Redis, namespace: str, *, ttl_seconds: float = 3600, fail_open: bool = True
    ):
        self.redis = client
        self.namespace = namespace
        self.ttl_ms = int(ttl_seconds * 1000)
        self.fail_open = fail_open
        self._hit, self._miss = LOOKUPS.labels(namespace, "hit"), LOOKUPS.labels(namespace, "miss")
        self._last_warning = -_WARN_EVERY_SECONDS
        self._in_flight: dict[str, asyncio.Future] = {}  # key -> its value being computed (lookup_or_fill)

    @classmethod
    def from_settings(cls, settings: CacheSettings, namespace: str) -> "Cache":
        return cls(
            async_client(settings),
            namespace,
            ttl_seconds=settings.cache_ttl_seconds,
            fail_open=settings.cache_fail_open,
        )

    def key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    async def get(self, key: str) -> Any | None:
        """The cached value, or None on a miss (and, failing open, when Redis is unreachable)."""
        return (await self.lookup(key))[0]

    async def lookup(self, key: str) -> tuple[Any | None, str]:
        """The cached value (or None) and how the lookup went: HIT, MISS, or BYPASS when Redis was unreachable
        and the cache fails open (counted as a miss in cache_lookups_total, and in cache_errors_total)."""
        result = MISS
        try:
            data = await self.redis.get(self.key(key))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._failed("get", exc)
            data, result = None, BYPASS
        if data is not None:
            try:
                value = decode(data)
            except (ValueError, OSError, EOFError) as exc:  # not ours, or cut short: a miss, overwritten on set
                ERRORS.labels(self.namespace, "decode").inc()
                self._warn(f"cache {self.namespace}: entry {key!r} is unreadable, treated as a miss: {exc}")
            else:
                self._hit.inc()
                return value, HIT
        self._miss.inc()
        return None, result

    async def set(self, key: str, value: Any) -> bool:
        """Store `value` for the TTL; False when Redis was unreachable and the cache fails open."""
        try:
            await self.redis.set(self.key(key), encode(value), px=self.ttl_ms)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._failed("set", exc)
            return False
        return True

    async def get_or_compute(self, key: str, compute: Callable[[], Any | Awaitable[Any]]) -> Any:
        """The cached value; on a miss, `compute()`'s, stored for next time. `compute` must not return None."""
        return (await self.lookup_or_fill(key, compute))[0]

    async def lookup_or_fill(self, key: str, compute: Callable[[], Any | Awaitable[Any]]) -> tuple[Any, str]:
        """The cached value and HIT; on a miss, `compute()`'s value, stored for next time (not when the lookup
        bypassed an unreachable Redis), and MISS or BYPASS. Misses of one key that arrive while its value is being
        computed wait for that computation instead of starting their own (in this process: a burst of requests
        for one cold item asks the model once per process, not once per request); they share its error too."""
        value, result = await self.lookup(key)
        if value is not None:
            return value, result
        flight = self._in_flight.get(key)
        if flight is None:
            # A task of its own: a leader whose client leaves does not cancel the followers' computation.
            flight = self._in_flight[key] = asyncio.ensure_future(self._fill(key, compute, store=result != BYPASS))
            flight.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return await asyncio.shield(flight), result

    async def _fill(self, key: str, compute: Callable[[], Any | Awaitable[Any]], store: bool) -> Any:
        value = compute()
        if inspect.isawaitable(value):
            value = await value
        if store:  # before the callers answer: the next request finds it
            await self.set(key, value)
        return value

    async def close(self) -> None:
        await self.redis.aclose()

    def _failed(self, operation: str, exc: Exception) -> None:
        ERRORS.labels(self.namespace, operation).inc()
        if not self.fail_open:
            raise exc
        self._warn(f"cache {self.namespace}: redis unavailable, answering without the cache: {exc}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_SECONDS:
            self._last_warning = now
            logger.warning("%s", message)
