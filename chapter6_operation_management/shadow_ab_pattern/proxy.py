"""The shadow proxy: every request is answered by model A (the primary), and a copy goes to model B (the shadow),
whose answer no one waits for.

In Kubernetes Istio's sidecar does this (manifests/istio.yml: the VirtualService sends all traffic to subset svc
and mirrors it to subset rf). This proxy does the same for the local run and compose, as Envoy's mirror does it:

- A request (method, path, query, headers, body) goes to A, and A's answer (status, headers, body) goes back to
  the client as it is, whatever the path: the proxy knows nothing of the API behind it. Its own paths are
  /health, /metrics and its docs under /proxy/ (/docs and /openapi.json are A's, as the client sees A's API).
- A copy of the same request goes to B (MIRROR_PERCENT of the requests: 100 by default, the VirtualService's
  mirrorPercentage) as a background task: sent with A's request, sent once (no retries), given
  MIRROR_TIMEOUT_SECONDS, its answer read and dropped. Whether B answers, fails or hangs, the client's answer
  and its time are A's alone.
- Bounded: at most MIRROR_MAX_IN_FLIGHT copies per worker wait for B. Beyond that a copy is not sent: it is
  dropped and counted, never queued, so a stuck B costs copies, not memory.
- A and B each have a connection pool of their own: copies stuck on a frozen B never hold a connection that A's
  calls need.
- Both copies carry the same X-Request-ID (the client's, or a new one), so the prediction log records that A and
  B write of one request share it.

Counted on /metrics: `shadow_mirror_requests_total{outcome}` (mirrored: B answered, a 4xx included, as A's
refusals are mirrored too; failed: B unreachable, too slow or a 5xx; dropped: not sent, the limit was reached),
`shadow_mirrors_in_flight` and `shadow_mirror_seconds`.
"""

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Response
from pydantic import Field
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mlpatterns import metrics
from mlpatterns.client import Upstream, Upstreams, UpstreamSettings
from mlpatterns.errors import PatternError
from mlpatterns.serving.middleware import handled, read_body
from mlpatterns.serving.schemas import Health
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import HttpServiceSettings

logger = logging.getLogger(__name__)

MIRRORS = metrics.counter(
    "shadow_mirror_requests_total",
    "Copies of requests for the shadow, by outcome: mirrored, failed, dropped",
    ["outcome"],
)
IN_FLIGHT = metrics.gauge("shadow_mirrors_in_flight", "Copies sent to the shadow and not yet answered")
MIRROR_SECONDS = metrics.histogram(
    "shadow_mirror_seconds", "Time from sending a copy to the shadow to its answer or failure", ["outcome"]
)

# Hop-by-hop headers (RFC 9110, 7.6.1) are the connection's, not the request's; the client sets Host and
# Content-Length for its own connection, and the core client sets X-Request-ID from the request's context.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect", "x-request-id"}
# The client hands on the body decoded (Content-Encoding undone); this server sets Date, Server and X-Request-ID.
NOT_RETURNED = HOP_BY_HOP | {"content-length", "content-encoding", "date", "server", "x-request-id"}
WARN_EVERY_SECONDS = 5.0


class ProxySettings(HttpServiceSettings, UpstreamSettings):
    """Where A and B are, and the mirror's numbers (the Istio objects' numbers: tests/test_istio_policy.py)."""

    primary_url: str = Field("http://127.0.0.1:8001", description="Model A: it answers every request.")
    shadow_url: str = Field("http://127.0.0.1:8002", description="Model B: it gets a copy of each request.")
    primary_timeout_seconds: float = Field(
        2.0, gt=0, description="A's time for an answer (the VirtualService's route timeout); then 504."
    )
    mirror_percent: float = Field(
        100.0,
        ge=0,
        le=100,
        description="The share of requests copied to B, in % (the VirtualService's mirrorPercentage).",
    )
    mirror_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="B's time for a copy (Envoy gives a mirror the route's timeout); then the copy counts as failed.",
    )
    mirror_max_in_flight: int = Field(
        100, gt=0, description="Copies waiting for B at once, per worker; more are dropped and counted, never queued."
    )


class Mirror:
    """Copies of requests sent to the shadow in the background: at most `max_in_flight` at once, each bounded."""

    def __init__(self, shadow: Upstream, settings: ProxySettings):
        self.shadow = shadow
        self.percent = settings.mirror_percent
        self.timeout = settings.mirror_timeout_seconds
        self.max_in_flight = settings.mirror_max_in_flight
        self.tasks: set[asyncio.Task] = set()  # a task nobody references may be collected before it ends
        self._outcomes = {outcome: MIRRORS.labels(outcome) for outcome in ("mirrored", "failed", "dropped")}
        self._last_warning = -WARN_EVERY_SECONDS

    def send(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        """Start a copy of the request (or drop it, counted, when as many as allowed are in flight); returns at once."""
        if self.percent < 100 and random.random() * 100 >= self.percent:
            return
        if len(self.tasks) >= self.max_in_flight:
            self._outcomes["dropped"].inc()
            self._warn(f"{self.max_in_flight} copies are waiting for the shadow: a copy was dropped")
            return
        # The task runs in a copy of the request's context: its X-Request-ID is the request's.
        task = asyncio.create_task(self._copy(method, target, headers, body))
        self.tasks.add(task)
        IN_FLIGHT.inc()
        task.add_done_callback(self._done)

    async def _copy(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        start = time.perf_counter()
        try:
            answer = await self.shadow.request(
                method, target, content=body, headers=headers, timeout=self.timeout, idempotent=False, any_status=True
            )
            outcome = "failed" if answer.status_code >= 500 else "mirrored"  # a 4xx: B judged the input as A did
            if outcome == "failed":
                self._warn(f"the shadow answered {answer.status_code} to {method} {target}")
        except PatternError as failure:  # unreachable (503), too slow (504), broken answer (502)
            outcome = "failed"
            self._warn(f"a copy of {method} {target} failed: {failure.detail}")
        except Exception:  # a task's error reaches no one else: count it and say so
            outcome = "failed"
            logger.exception("a copy of %s %s failed", method, target)
        MIRROR_SECONDS.labels(outcome).observe(time.perf_counter() - start)
        self._outcomes[outcome].inc()

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        IN_FLIGHT.dec()

    def _warn(self, message: str) -> None:
        """A dead shadow fails every copy: say so every few seconds, not on every request (metrics count each)."""
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            logger.warning("%s (shadow_mirror_requests_total counts every copy)", message)

    async def drain(self) -> None:
        """At shutdown: let the copies in flight finish (each has its timeout), so none is cut short."""
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=self.timeout + 1.0)


FORWARDED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_NOT_FORWARDED = {name.encode() for name in NOT_FORWARDED}  # as ASGI gives header names: lowercase bytes
_NOT_RETURNED = {name.encode() for name in NOT_RETURNED}


class Forward:
    """Every request that is not the proxy's own goes to A (a copy to B), and A's answer goes back as it is.

    A pure ASGI layer, given to `create_service_app` as a lane: it answers ahead of FastAPI's router, which would
    match the request against every route before a catch-all `/{path:path}`, build a Request, solve the
    endpoint's dependencies and wrap it in two exception handlers: a third of the proxy's CPU per forward. It sits
    inside the request id, metrics and body bounds, so a forwarded request is counted, bounded and logged as
    any other, and the app's exception handlers answer A's failures (503 unreachable, 504 too slow).

    The proxy's own requests are its router's: a route's path with one of its methods (/health, /metrics, the
    docs under /proxy/), or a path under a mount (the docs' static files). A method that is not forwarded, on a
    path that is not the proxy's, is answered 405."""

    path = "/{path:path}"  # the `path` label of a forwarded request on /metrics, as a route's would be

    def __init__(self, app: ASGIApp, service: FastAPI):
        self.app = app
        self.state = service.state  # the lifespan sets A's upstream and the mirror on it
        self.handlers = service.exception_handlers
        self.own_routes: dict[str, set[str]] = {}
        for route in service.router.routes:
            if isinstance(route, Route):  # the proxy's own routes have no path parameters
                self.own_routes.setdefault(route.path, set()).update(route.methods or ())
        self.own_prefixes = tuple(route.path + "/" for route in service.router.routes if isinstance(route, Mount))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._own(scope):
            await self.app(scope, receive, send)
            return
        scope["route"] = self
        try:
            response = await self._forward(scope, receive)
        except Exception as error:
            response = await handled(self.handlers, scope, error)
        await response(scope, receive, send)

    def _own(self, scope: Scope) -> bool:
        path, method = scope["path"], scope["method"]
        if path.startswith(self.own_prefixes):
            return True
        methods = self.own_routes.get(path)
        # A method no route of the path takes is forwarded, as the catch-all route took it (HEAD /health is A's).
        return methods is not None and (method in methods or method not in FORWARDED_METHODS)

    async def _forward(self, scope: Scope, receive: Receive) -> Response:
        method = scope["method"]
        if method not in FORWARDED_METHODS:
            raise HTTPException(405, headers={"Allow": ", ".join(FORWARDED_METHODS)})
        body, complete = await read_body(receive)
        if not complete:
            raise ClientDisconnect  # the body bounds count it as 499, the client being gone
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")  # percent-encoding kept
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name not in _NOT_FORWARDED
        }
        state = self.state
        state.mirror.send(method, target, headers, body)
        answer = await state.primary.request(
            method, target, content=body, headers=headers, timeout=state.primary_timeout, any_status=True
        )
        response = Response(answer.content, status_code=answer.status_code)
        response.raw_headers += [(k, v) for k, v in answer.raw_headers if k.lower() not in _NOT_RETURNED]
        return response


def add_routes(router: APIRouter) -> None:
    @router.get("/health", response_model=Health)
    def health():
        return {"health": "ok"}  # the proxy's own: A or B down leaves it up


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A pool each; B's holds as many connections as copies may be in flight, so no copy waits for one.
        shadow_settings = settings.model_copy(update={"upstream_max_connections": settings.mirror_max_in_flight})
        async with (
            Upstreams({"primary": settings.primary_url}, settings) as primary,
            Upstreams({"shadow": settings.shadow_url}, shadow_settings) as shadow,
        ):
            app.state.primary = primary["primary"]
            app.state.primary_timeout = settings.primary_timeout_seconds
            app.state.mirror = Mirror(shadow["shadow"], settings)
            yield
            await app.state.mirror.drain()

    app = create_service_app(
        settings,
        add_routes,
        lifespan=lifespan,
        lanes=[Forward],
        # The proxy's own docs: /docs and /openapi.json are A's, forwarded, since the API clients see is A's.
        docs_url="/proxy/docs",
        redoc_url=None,
        openapi_url="/proxy/openapi.json",
        swagger_ui_oauth2_redirect_url="/proxy/docs/oauth2-redirect",
        static_url="/proxy/static-offline-docs",
    )
    logger.info(
        "answering from %s, mirroring %g%% of requests to %s",
        settings.primary_url,
        settings.mirror_percent,
        settings.shadow_url,
    )
    return app
