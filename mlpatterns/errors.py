"""Typed errors that carry their HTTP status; one handler turns them into FastAPI's `{"detail": ...}`."""

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
    """A dependency (model, queue, database) cannot serve right now; the client may retry."""

    status_code = 503


async def _handle_pattern_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PatternError)
    if exc.status_code >= 500:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PatternError, _handle_pattern_error)
