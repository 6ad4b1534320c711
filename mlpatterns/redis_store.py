"""Redis connections built from settings, with timeouts, so an outage is an error within a bound, not a hang.

    settings = RedisSettings()                 # REDIS_URL, REDIS_TIMEOUT_SECONDS from the environment
    client = async_client(settings)            # an async API (FastAPI): never blocks the event loop
    client = sync_client(settings)             # a queue worker, a /metrics collector in the thread pool

Both clients return bytes (no decoding): payloads, results and cached arrays are binary. An outage raises
`redis.exceptions.ConnectionError` or `TimeoutError`, which every app of `create_service_app` answers with 503.
"""

import redis
import redis.asyncio
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RedisSettings(BaseSettings):
    """Where Redis is and how long to wait for it. Compose and manifests set REDIS_URL=redis://redis:6379/0."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="redis://host:port/db of the shared Redis.")
    redis_timeout_seconds: float = Field(
        2.0, gt=0, description="Connect and read timeout of every Redis call: past it, the call fails (503)."
    )


def sync_client(settings: RedisSettings, extra_read_seconds: float = 0.0) -> redis.Redis:
    """`extra_read_seconds` lengthens the read timeout for calls that block on purpose (XREADGROUP BLOCK)."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds + extra_read_seconds,
    )


def async_client(settings: RedisSettings) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
    )
