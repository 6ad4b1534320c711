"""Typed errors that carry their HTTP status; one handler turns them into FastAPI's `{"detail": ...}`."""

import logging

import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

logger = logging.getLogger(__name__)


class PatternError(Exception):
    """Base of every error a pattern raises on purpose. Subclasses fix the status code."""

    status_code = 500

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class InvalidInput(PatternError):
    """The request is well-formed JSON but its values cannot be predicted on (shape, range)."""

    status_code = 422


class PayloadTooLarge(PatternError):
    status_code = 413


class NotFound(PatternError):
    status_code = 404


class Conflict(PatternError):
    status_code = 409


class Unavailable(PatternError):
    """A dependency (model, queue, database, another service) cannot serve right now; the client may retry."""

    status_code = 503


class BadGateway(PatternError):
    """Another service answered, but with an error or an answer that makes no sense."""

    status_code = 502


class GatewayTimeout(PatternError):
    """Another service did not answer in time."""

    status_code = 504


# Errors of the backing stores that mean "down or unreachable right now", not "your request is wrong": every
# service answers them with 503 and the store's name, whichever pattern uses the store.
DEPENDENCY_ERRORS: dict[type[Exception], str] = {
    redis.exceptions.ConnectionError: "redis",  # includes refused connections and a server still loading
    redis.exceptions.TimeoutError: "redis",
    sqlalchemy.exc.OperationalError: "the database",  # refused, dropped or timed-out connections
    sqlalchemy.exc.TimeoutError: "the database",  # no pooled connection free in time
}


async def _handle_pattern_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PatternError)
    if exc.status_code >= 500:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


async def _handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 shape, less the offending `input`: echoing it back could be a megabyte, or a NaN that
    JSON cannot carry (FastAPI's own handler answers such a request with a 500)."""
    assert isinstance(exc, RequestValidationError | ValidationError)
    errors = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


async def _handle_dependency_error(request: Request, exc: Exception) -> JSONResponse:
    store = next(name for kind, name in DEPENDENCY_ERRORS.items() if isinstance(exc, kind))
    logger.warning("%s %s -> 503: %s unavailable: %s", request.method, request.url.path, store, exc)
    return JSONResponse({"detail": f"{store} is unavailable; try again later"}, status_code=503)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PatternError, _handle_pattern_error)
    for kind in DEPENDENCY_ERRORS:
        app.add_exception_handler(kind, _handle_dependency_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(ValidationError, _handle_validation_error)
