"""Calls to other services: one aiohttp `ClientSession` per worker, upstreams by name, failures as 502/503/504.

A service names the services it calls when it builds its app; the client is opened and closed with the app's
lifespan, in each worker process:

    app = create_service_app(settings, add_routes, upstreams={"prediction": settings.prediction_url})

and a route calls them through `request.app.state.upstreams` (or the `UpstreamsDep` dependency):

    async def predict(request: Request, body: PredictRequest) -> dict:
        prediction = request.app.state.upstreams["prediction"]
        return await prediction.post("/predict", json=body.model_dump(), timeout=2.0)

What a call gives:
- 2xx: the upstream's JSON (`get`/`post`/`put`/`delete`; validated when a pydantic `model` is given), or the
  response itself (`request`);
- refused, unresolvable or not connected in time: 503 "upstream 'prediction' is unavailable (...)";
- no answer in time: 504 "upstream 'prediction' did not answer within 2.0 s";
- 5xx (or 3xx, which a service API never means to send): 502 "upstream 'prediction' answered 500: <its detail>";
- 2xx with a body that is not the JSON expected: 502;
- 4xx: the same status and the upstream's own detail (`UpstreamRefused`). The upstream judged the input our
  caller sent on, so the caller is told what was wrong with it, as if it had asked the upstream itself.
These are the core's typed errors, so a route that lets them through answers them as they are; a proxy fanning
out catches them (`PatternError`) to name a dead or slow backend in its own answer:

    async def call(name: str) -> dict:
        try:
            return await upstreams[name].post("/predict", json=payload, timeout=1.0)
        except PatternError as failure:
            return {"error": failure.detail}  # "upstream 'tree' did not answer within 1.0 s"

    answers = dict(zip(names, await asyncio.gather(*(call(name) for name in names))))

Every call sends the request id of its context (`X-Request-ID`). Idempotent calls (GET, HEAD, PUT, DELETE,
OPTIONS, or any call marked `idempotent=True`) are retried with stamina (exponential backoff with jitter, a few
attempts, bounded in time) on connect errors, timeouts and 502/503/504; any other call is sent once.

Why aiohttp and not httpx: a hop is paid for in the caller's CPU, on every request of a proxy, a fan-out or a
prep service. httpx's AsyncClient took about 1 ms of it per call one at a time and over 3 ms at 32 concurrent
calls (its pool rechecks every connection for every request, through anyio: encode/httpx#3215); aiohttp's
ClientSession about 0.2 and 0.12 ms, and Upstream adds a few percent to it. `python -m mlpatterns.bench.hop`
measures the three side by side.
"""

import asyncio
import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import aiohttp
import orjson
import stamina
from fastapi import Depends, Request
from multidict import CIMultiDictProxy
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlpatterns.errors import BadGateway, GatewayTimeout, PatternError, Unavailable
from mlpatterns.logging import request_id

logger = logging.getLogger(__name__)

Model = TypeVar("Model", bound=BaseModel)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})  # the upstream (or a proxy before it) says: not now, try again
# Backoff between attempts: short, since a caller is waiting (stamina adds up to WAIT_JITTER at random).
WAIT_INITIAL = 0.05
WAIT_MAX = 0.5
WAIT_JITTER = 0.1
# An idle connection is closed by the caller after this, before the services' own keep-alive (5 s,
# gunicorn_conf) closes it: a request is never sent on a connection that the callee is closing.
KEEPALIVE_SECONDS = 4.0
JSON_HEADERS = {"content-type": "application/json"}


class UpstreamSettings(BaseSettings):
    """How a service calls other services. A service's settings class may inherit it (its fields then come with
    the service's settings); otherwise `create_service_app` reads it from the environment."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    upstream_connect_timeout: float = Field(
        1.0, gt=0, description="Seconds to connect to another service; refused, unresolvable or slower: 503."
    )
    upstream_read_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for an answer (each read of it) once the request is sent: else 504."
    )
    upstream_max_connections: int = Field(
        100, gt=0, description="Open connections per worker process, all upstreams together."
    )
    upstream_retry_attempts: int = Field(3, ge=1, description="Attempts of an idempotent call (1: never retried).")
    upstream_retry_timeout: float = Field(
        5.0, gt=0, description="Seconds after the first attempt past which no further attempt starts."
    )


class UpstreamRefused(PatternError):
    """A 4xx of an upstream, passed on with the upstream's status and detail."""

    def __init__(self, upstream: str, status_code: int, detail: Any):
        super().__init__(detail)
        self.upstream = upstream
        self.status_code = status_code


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """An upstream's answer, read whole: what `Upstream.request` returns."""

    status_code: int
    reason_phrase: str
    headers: CIMultiDictProxy[str]  # case-insensitive; a repeated header keeps each value
    raw_headers: tuple[tuple[bytes, bytes], ...]  # as they came, for a proxy that passes them on
    content: bytes  # Content-Encoding undone

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return orjson.loads(self.content)


class _RetryableStatus(Exception):
    """Raised inside an attempt so that stamina retries a 502/503/504; unwrapped when attempts run out."""

    def __init__(self, response: UpstreamResponse):
        self.response = response


def _retryable(exc: Exception) -> bool:
    # Not connected (refused, unresolvable, no connection in time), no answer in time, or "not now" (503...).
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerTimeoutError | _RetryableStatus)


def _detail(response: UpstreamResponse) -> Any:
    """The upstream's `detail` (FastAPI's error shape), else the start of its body."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:300] or response.reason_phrase
    return body.get("detail", body) if isinstance(body, dict) else body


class Upstream:
    """One service this one calls, by name and base URL. Built by `Upstreams`; all share one session."""

    def __init__(self, name: str, base_url: str, session: aiohttp.ClientSession, settings: UpstreamSettings):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._settings = settings

    def __repr__(self) -> str:
        return f"Upstream({self.name!r}, {self.base_url!r})"

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        timeout: float | None = None,
        any_status: bool = False,
    ) -> UpstreamResponse:
        """Send `method path` with a body (`json`, encoded here, or `content` as it is), a query (`params`) and
        `headers`, and return the 2xx response, or raise the typed error described in the module's docstring.

        `timeout` bounds the whole call, retries included (a proxy's per-backend budget); without it each
        attempt has the settings' connect and read timeouts. `idempotent` overrides what the method says.
        `any_status`: return the upstream's answer whatever its status, for a proxy that passes it on as it is
        (a 5xx of an idempotent call is still retried first); only no answer at all raises (503, 504).
        """
        method = method.upper()
        headers = {**(headers or {}), "x-request-id": request_id.get() or uuid.uuid4().hex}
        if json is not None:
            content, headers = orjson.dumps(json), {**headers, **JSON_HEADERS}
        retry = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        call = self._send(method, self.base_url + path, retry, headers=headers, data=content or None, params=params)
        if timeout is None:
            response = await call
        else:
            try:
                async with asyncio.timeout(timeout):
                    response = await call
            except TimeoutError:
                raise GatewayTimeout(f"upstream {self.name!r} did not answer within {timeout} s") from None
        return response if any_status else self._checked(response)

    async def get(self, path: str, *, model: type[Model] | None = None, **kwargs) -> Any:
        """GET and decode the JSON answer (into `model` when given)."""
        return self._decoded(await self.request("GET", path, **kwargs), model)

    async def post(self, path: str, *, model: type[Model] | None = None, **kwargs) -> Any:
        return self._decoded(await self.request("POST", path, **kwargs), model)

    async def put(self, path: str, *, model: type[Model] | None = None, **kwargs) -> Any:
        return self._decoded(await self.request("PUT", path, **kwargs), model)

    async def delete(self, path: str, *, model: type[Model] | None = None, **kwargs) -> Any:
        return self._decoded(await self.request("DELETE", path, **kwargs), model)

    async def _send(self, method: str, url: str, retry: bool, **kwargs) -> UpstreamResponse:
        try:
            if not retry:
                return await self._attempt(method, url, **kwargs)
            async for attempt in stamina.retry_context(
                on=self._log_failed_attempt,
                attempts=self._settings.upstream_retry_attempts,
                timeout=self._settings.upstream_retry_timeout,
                wait_initial=WAIT_INITIAL,
                wait_max=WAIT_MAX,
                wait_jitter=WAIT_JITTER,
            ):
                with attempt:
                    return await self._attempt(method, url, **kwargs)
        except _RetryableStatus as exc:
            return exc.response  # attempts ran out: answered as any other 5xx
        except aiohttp.ClientError as exc:
            raise self._failure(exc) from exc
        raise AssertionError("unreachable: stamina either returns an attempt's result or raises")

    async def _attempt(self, method: str, url: str, **kwargs) -> UpstreamResponse:
        async with self._session.request(method, url, **kwargs) as answer:
            response = UpstreamResponse(
                answer.status, answer.reason or "", answer.headers, answer.raw_headers, await answer.read()
            )
        if response.status_code in RETRY_STATUSES:
            raise _RetryableStatus(response)
        return response

    def _log_failed_attempt(self, exc: Exception) -> bool:
        if not _retryable(exc):
            return False
        cause = f"answered {exc.response.status_code}" if isinstance(exc, _RetryableStatus) else repr(exc)
        logger.info("upstream %r: an attempt failed (%s); retrying while attempts and time remain", self.name, cause)
        return True

    def _failure(self, exc: aiohttp.ClientError) -> PatternError:
        settings = self._settings
        if isinstance(exc, aiohttp.ConnectionTimeoutError):  # connecting, or waiting for a free connection
            return Unavailable(
                f"upstream {self.name!r} is unavailable (no connection within {settings.upstream_connect_timeout} s)"
            )
        if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unresolvable
            return Unavailable(f"upstream {self.name!r} is unavailable ({exc.os_error.strerror or exc})")
        if isinstance(exc, aiohttp.ServerTimeoutError):
            return GatewayTimeout(f"upstream {self.name!r} did not answer within {settings.upstream_read_timeout} s")
        return BadGateway(f"upstream {self.name!r} failed: {exc or type(exc).__name__}")

    def _checked(self, response: UpstreamResponse) -> UpstreamResponse:
        status = response.status_code
        if 200 <= status < 300:
            return response
        if 400 <= status < 500:
            raise UpstreamRefused(self.name, status, _detail(response))
        raise BadGateway(f"upstream {self.name!r} answered {status}: {_detail(response)}")

    def _decoded(self, response: UpstreamResponse, model: type[Model] | None) -> Any:
        try:
            return orjson.loads(response.content) if model is None else model.model_validate_json(response.content)
        except orjson.JSONDecodeError:
            raise BadGateway(
                f"upstream {self.name!r} answered {response.status_code} with a body that is not JSON: "
                f"{response.text[:100]!r}"
            ) from None
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "body"
            raise BadGateway(
                f"upstream {self.name!r} answered {response.status_code} with an unexpected body: "
                f"{where}: {error['msg']}"
            ) from None


class Upstreams(Mapping[str, Upstream]):
    """The upstreams of one worker process, by name, over one connection pool. Built in a running event loop
    and used as an async context manager: `create_service_app(..., upstreams=...)` enters it in the app's
    lifespan and sets `app.state.upstreams`."""

    def __init__(self, base_urls: Mapping[str, str], settings: UpstreamSettings | None = None):
        settings = settings or UpstreamSettings()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.upstream_max_connections, keepalive_timeout=KEEPALIVE_SECONDS
            ),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=settings.upstream_connect_timeout,  # waiting for a free connection counts as connecting
                sock_read=settings.upstream_read_timeout,
            ),
            # Calls between services go straight to them: no proxy or .netrc from the environment.
            trust_env=False,
            # A body is sent with the type its caller gave (JSON's, or a proxied request's), never a guessed one.
            skip_auto_headers=("Content-Type",),
            raise_for_status=False,
            # One session relays every client's requests: a cookie one answer sets must not go out with the next.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._upstreams = {name: Upstream(name, url, self._session, settings) for name, url in base_urls.items()}

    def __getitem__(self, name: str) -> Upstream:
        return self._upstreams[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._upstreams)

    def __len__(self) -> int:
        return len(self._upstreams)

    @property
    def closed(self) -> bool:
        return self._session.closed

    async def __aenter__(self) -> "Upstreams":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._session.close()


def get_upstreams(request: Request) -> Upstreams:
    return request.app.state.upstreams


UpstreamsDep = Annotated[Upstreams, Depends(get_upstreams)]
