"""Typed errors that carry their HTTP status; one handler turns them into FastAPI's `{"detail": ...}`.

Every error answer of every service has one shape, FastAPI's: `{"detail": "what went wrong"}`, except that a request
that fails validation (a 422) may name each field in error instead: `{"detail": [{"type", "loc", "msg"}, ...]}`.
A body that is not JSON at all is a 400 (a syntax error, as HTTP, nginx and KServe have it), every other invalid
request a 422. The OpenAPI document says so on every operation (`document_errors`), with these models.
"""

import json
import logging

import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from pydantic.json_schema import models_json_schema

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


class UnsupportedMediaType(PatternError):
    """A body in a format the route does not take (JSON where raw bytes are expected)."""

    status_code = 415


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


class ErrorMessage(BaseModel):
    """The body of every error answer but a 422's."""

    detail: str = Field(description="What went wrong, in one sentence.")


class FieldError(BaseModel):
    type: str = Field(description="The kind of error (pydantic's error type), e.g. `float_type`, `missing`.")
    loc: list[str | int] = Field(description='Where: `["body", "data", 0, 2]` is the third value of the first item.')
    msg: str


class InvalidRequest(BaseModel):
    """The body of a 422: the request is well-formed but not valid."""

    detail: str | list[FieldError] = Field(
        description="The fields in error (the first one of a batch), or one message for a value the model or the "
        "database cannot take (e.g. an item of the wrong shape)."
    )


# The error statuses of the project's services: what each means and the model of its body.
ERROR_STATUSES: dict[int, tuple[str, type[BaseModel]]] = {
    400: ("The body is not JSON.", ErrorMessage),
    404: ("Not found.", ErrorMessage),
    408: ("The request body did not arrive in time.", ErrorMessage),
    409: ("Conflicts with what is stored.", ErrorMessage),
    413: ("The request body, or the batch in it, is too large.", ErrorMessage),
    422: ("Valid JSON, but not a valid request.", InvalidRequest),
    502: ("Another service answered with an error.", ErrorMessage),
    503: ("A dependency (database, queue, model, another service) is unavailable; try again later.", ErrorMessage),
    504: ("Another service did not answer in time.", ErrorMessage),
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """`responses=` for a route or router that raises these statuses itself (e.g. `error_responses(404, 503)`)."""
    return {
        status: {"description": ERROR_STATUSES[status][0], "model": ERROR_STATUSES[status][1]} for status in statuses
    }


# What every route with a request body can answer whatever it does (the body-size limit, the body-read deadline,
# parsing and validation), and every route with parameters (validation); the rest each route declares itself.
BODY_STATUSES = (400, 408, 413, 422)
PARAMETER_STATUSES = (422,)
# A route that answers an invalid request with a status of its own instead of 422 (the open inference protocol's
# 400) names it in this OpenAPI extension (`openapi_extra`), and is not documented with a 422 it never sends.
OWN_INVALID_STATUS = "x-invalid-request-status"


def document_errors(openapi: dict) -> dict:
    """Complete an OpenAPI document in place: on every operation, the statuses that the core answers for it, with
    the error models (in place of FastAPI's own 422, whose `detail` is always a list)."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    _, definitions = models_json_schema(
        [(ErrorMessage, "serialization"), (InvalidRequest, "serialization")], ref_template=_REF + "{model}"
    )
    for name, schema in definitions["$defs"].items():
        components.setdefault(name, schema)
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            statuses = BODY_STATUSES if "requestBody" in operation else ()
            statuses += PARAMETER_STATUSES if operation.get("parameters") else ()
            responses = operation.setdefault("responses", {})
            if operation.pop(OWN_INVALID_STATUS, None) is not None:
                statuses = tuple(status for status in statuses if status != 422)
                responses.pop("422", None)  # FastAPI's own, added to every route with a body
            for status in statuses:
                if str(status) not in responses or status == 422:  # FastAPI's 422 says `detail` is always a list
                    responses[str(status)] = _response(status)
            operation["responses"] = dict(sorted(responses.items()))
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's, now unused
        if _REF + name not in json.dumps(openapi):
            components.pop(name, None)
    return openapi


_REF = "#/components/schemas/"


def _response(status: int) -> dict:
    description, model = ERROR_STATUSES[status]
    return {"description": description, "content": {"application/json": {"schema": {"$ref": _REF + model.__name__}}}}


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
    JSON cannot carry (FastAPI's own handler answers such a request with a 500). A body that is not JSON at all
    is a 400 with one message: FastAPI reports it as a validation error of type `json_invalid`."""
    assert isinstance(exc, RequestValidationError | ValidationError)
    errors = exc.errors()
    if isinstance(exc, RequestValidationError) and errors and errors[0]["type"] == "json_invalid":
        error = errors[0]
        where = error["loc"][-1]
        reason = error.get("ctx", {}).get("error", "not JSON")
        return JSONResponse({"detail": f"JSON decode error at character {where}: {reason}"}, status_code=400)
    detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in errors]
    return JSONResponse({"detail": detail}, status_code=422)


async def _handle_dependency_error(request: Request, exc: Exception) -> JSONResponse:
    store = next(name for kind, name in DEPENDENCY_ERRORS.items() if isinstance(exc, kind))
    logger.warning("%s %s -> 503: %s unavailable: %s", request.method, request.url.path, store, exc)
    return JSONResponse({"detail": f"{store} is unavailable; try again later"}, status_code=503)


def install_error_handlers(app: FastAPI) -> None:
    """The handlers above, and the app's OpenAPI document completed with the error answers (`document_errors`)."""
    app.add_exception_handler(PatternError, _handle_pattern_error)
    for kind in DEPENDENCY_ERRORS:
        app.add_exception_handler(kind, _handle_dependency_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(ValidationError, _handle_validation_error)
    build_openapi = app.openapi  # FastAPI's: builds the document once and keeps it in app.openapi_schema

    def openapi() -> dict:
        if app.openapi_schema is None:
            document_errors(build_openapi())
        return app.openapi_schema

    app.openapi = openapi
