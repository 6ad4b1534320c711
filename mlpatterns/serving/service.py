"""What every HTTP service of the project shares, model or not: `create_service_app(settings, add_routes)`."""

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline

from mlpatterns.client import Upstreams, UpstreamSettings
from mlpatterns.errors import install_error_handlers
from mlpatterns.logging import configure_logging
from mlpatterns.metrics import metrics_response
from mlpatterns.serving.middleware import FastLane, RequestBodyMiddleware, RequestMiddleware
from mlpatterns.settings import HttpServiceSettings

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager]


def create_service_app(
    settings: HttpServiceSettings,
    add_routes: Callable[[APIRouter], None],
    *,
    upstreams: Mapping[str, str] | None = None,
    lifespan: Lifespan | None = None,
    lanes: Sequence[type] = (),
    **fastapi_options,
) -> FastAPI:
    """What every HTTP service of the project shares: logging to stdout, offline API docs, typed errors as
    4xx, bounds on a request body's size and time (413, 408; a client gone mid-body counts as 499), Prometheus
    metrics on `/metrics`, and a request id on every request (from or to `X-Request-ID`, in every log line).
    `add_routes` puts the service's own routes on the app's router (before
    /metrics: routes are matched in order, and the service's are the busy ones).

    `upstreams` names the services this one calls, by base URL; the app's lifespan then opens one client for
    them in each worker, as `app.state.upstreams` (see `mlpatterns.client`), around the service's own
    `lifespan`. Its settings come from `settings` when that inherits `UpstreamSettings`, else from the
    environment.

    `lanes` are pure ASGI layers that answer some requests ahead of FastAPI's router, as `FastLane` does, and
    pass the others on: each is built as `lane(app, service=app)`, inside FastLane, so what it answers is counted,
    bounded and logged as any other request (the shadow proxy's forwarding is one)."""
    configure_logging(settings.log_level, settings.log_json)
    if upstreams:
        lifespan = _with_upstreams(
            upstreams, settings if isinstance(settings, UpstreamSettings) else UpstreamSettings(), lifespan
        )
    app = FastAPIOffline(
        title=settings.api_title,
        description=settings.api_description,
        version=settings.api_version,
        # FastAPI's native OpenTelemetry stays off: the patterns export Prometheus metrics and set up no
        # OpenTelemetry provider, and looking for one on every request costs more than the metrics do.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        lifespan=lifespan,
        **fastapi_options,
    )
    install_error_handlers(app)
    # A hot path goes on the app's own router, not through include_router: FastAPI matches an included
    # router's routes twice per request, which costs about as much as the model call.
    add_routes(app.router)
    app.add_api_route("/metrics", metrics_response, include_in_schema=False)
    for lane in reversed(lanes):  # each added goes outside the ones before: the first lane sees requests first
        app.add_middleware(lane, service=app)
    app.add_middleware(FastLane, service=app)  # innermost but the lanes: inside the id, metrics and body bounds
    app.add_middleware(
        RequestBodyMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_seconds=settings.body_timeout_seconds,
        idle_timeout_seconds=settings.body_idle_timeout_seconds,
    )
    app.add_middleware(RequestMiddleware)  # outermost: whatever the layers inside log carries the id
    return app


def _with_upstreams(base_urls: Mapping[str, str], settings: UpstreamSettings, lifespan: Lifespan | None) -> Lifespan:
    @asynccontextmanager
    async def lifespan_with_upstreams(app: FastAPI):
        async with Upstreams(base_urls, settings) as app.state.upstreams:
            if lifespan is None:
                yield
            else:
                async with lifespan(app) as state:
                    yield state

    return lifespan_with_upstreams
