"""What every HTTP service of the project shares, model or not: `create_service_app(settings, add_routes)`."""

from collections.abc import Callable

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline

from mlpatterns.errors import install_error_handlers
from mlpatterns.logging import configure_logging
from mlpatterns.metrics import metrics_response
from mlpatterns.serving.middleware import BodySizeLimitMiddleware, MetricsMiddleware
from mlpatterns.settings import HttpServiceSettings


def create_service_app(
    settings: HttpServiceSettings, add_routes: Callable[[APIRouter], None], **fastapi_options
) -> FastAPI:
    """What every HTTP service of the project shares: logging to stdout, offline API docs, typed errors as
    4xx, a body-size limit, and Prometheus metrics on `/metrics`. `add_routes` puts the service's own routes
    on the app's router (before /metrics: routes are matched in order, and the service's are the busy ones)."""
    configure_logging(settings.log_level, settings.log_json)
    app = FastAPIOffline(
        title=settings.api_title,
        description=settings.api_description,
        version=settings.api_version,
        # FastAPI's native OpenTelemetry stays off: the patterns export Prometheus metrics and set up no
        # OpenTelemetry provider, and looking for one on every request costs more than the metrics do.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        **fastapi_options,
    )
    install_error_handlers(app)
    # A hot path goes on the app's own router, not through include_router: FastAPI matches an included
    # router's routes twice per request, which costs about as much as the model call.
    add_routes(app.router)
    app.add_api_route("/metrics", metrics_response, include_in_schema=False)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    return app
