"""The model management service. gunicorn calls `create_app()` in each worker, which opens its own pool.

The schema is not touched here: `migrate.py` brings it up to date once, before any worker starts.
"""

from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from chapter2_training.model_db.routes import api_router, health
from chapter2_training.model_db.settings import ModelDbSettings
from mlpatterns.db import session_factory
from mlpatterns.serving.service import create_service_app


async def _data_refused(request: Request, exc: Exception) -> JSONResponse:
    """A value the schemas let through but PostgreSQL refuses is still the client's input: a 422, not a 500."""
    detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
    return JSONResponse({"detail": f"the database refused a value: {detail}"}, status_code=422)


def create_app(settings: ModelDbSettings | None = None) -> FastAPI:
    settings = settings or ModelDbSettings()
    engine = settings.engine()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.dispose()

    def add_routes(router: APIRouter) -> None:
        router.include_router(health, prefix=f"/v{settings.api_version}")
        router.include_router(api_router)

    app = create_service_app(settings, add_routes, lifespan=lifespan)
    app.state.sessions = session_factory(engine)
    app.add_exception_handler(DataError, _data_refused)
    return app
