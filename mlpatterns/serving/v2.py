"""The open inference protocol (V2: the REST API of KServe, Triton and MLServer) beside the book's paths, so that
their clients talk to any serving pattern unchanged. The shared serving app (`create_serving_app`) and the tensor
service call `add_v2_routes(router, plane, ...)`, which adds, for the plane's model (here iris_svc; a setting,
SERVED_MODEL_NAME, gives it another name, one for both arms of an A/B test):

    GET  /v2/health/live, /v2/health/ready, /v2/models/iris_svc/ready      200, empty body
    GET  /v2                 {"name": "mlpatterns", "version": "0.1.0", "extensions": []}
    GET  /v2/models/iris_svc {"name": "iris_svc", "platform": "onnxruntime_onnx",
                              "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}],
                              "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                                          {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]}
    POST /v2/models/iris_svc/infer
         {"id": "7", "inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32",
                                 "data": [5.1, 3.5, 1.4, 0.2, 6.3, 3.3, 6.0, 2.5]}]}
      -> {"model_name": "iris_svc", "id": "7", "outputs": [
             {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["setosa", "virginica"]},
             {"name": "probabilities", "shape": [2, 3], "datatype": "FP32", "data": [0.97, 0.016, ...]}]}

Tensor data is flat, in row-major order, or nested as deep as the shape (the protocol allows both); flat data
becomes the model's input in one numpy call, about twice as cheaply as /predict's nested rows. The tensor goes
through the same data plane as /predict (batch limit, hooks, value checks), so both answer alike. `outputs` picks
among the model's outputs: `label` (each item's label name, as /predict/label answers) and its scores (named as
in the ONNX model, as /predict answers); a postprocess hook's extra fields come as more outputs (one value per
item) or as the answer's `parameters` (one value per batch). A model whose request items are base64 images (a
preprocess hook) takes them as a BYTES tensor of shape [N].

Every error answer is the protocol's `{"error": "..."}`: 400 for a bad request, 404 for a model this server does
not serve, 413 for a batch over the limit. Not implemented: model versions (the paths with /versions/ answer 404)
and Triton's binary tensor extension (a request that uses it is refused with a 400 that says so).
"""

import math
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, create_model
from starlette.datastructures import Headers

from mlpatterns import __version__
from mlpatterns.dataplane import Answer, DataPlane
from mlpatterns.errors import OWN_INVALID_STATUS, ErrorMessage, InvalidInput, PatternError
from mlpatterns.serving.schemas import feature, first_error_only

PLATFORM = "onnxruntime_onnx"  # Triton's name for an ONNX model run by onnxruntime
LABEL_OUTPUT = "label"

_DATATYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_DATATYPE_OF = {np.dtype(dtype): name for name, dtype in _DATATYPES.items()}


def datatype(dtype) -> str:
    """The protocol's name of a numpy dtype: FP32 for float32, BYTES for strings."""
    return _DATATYPE_OF.get(np.dtype(dtype), "BYTES")


def _parameter(value):
    if isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise ValueError("a parameter is a string, a finite number or a boolean")


# The protocol's $parameter: one validator rather than a union, whose error would list each type that did not fit.
Parameters = dict[
    str,
    Annotated[Any, AfterValidator(_parameter), WithJsonSchema({"type": ["string", "number", "boolean"]})],
]


class TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(description="The protocol's element type: FP32, INT64, BYTES, ...")
    shape: list[int] = Field(description="-1: any size (the batch axis).")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list = Field(description="The tensor's values, flat, in row-major order.")


class InferenceResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    id: str | None = Field(None, description="The request's id, when it has one.")
    parameters: Parameters | None = Field(None, description="Fields of the answer with one value for the batch.")
    outputs: list[ResponseOutput]


class InferenceError(BaseModel):
    """The body of every error answer of the protocol's routes."""

    error: str = Field(description="What went wrong, in one sentence.")


def add_v2_routes(
    router: APIRouter,
    plane: DataPlane,
    sample_input: list | np.ndarray,
    *,
    value_limit: float | None,
    name: str | None = None,
) -> None:
    """The protocol's routes for `plane`'s model, named `name` (by default the plane's name); `sample_input` (a
    batch of /predict's items) is the request example, `value_limit` the magnitude from which a value is out of
    the model's dtype (as for /predict)."""
    name = name or plane.name
    model = _Model(plane, name, sample_input, value_limit)
    base = f"/v2/models/{name}"
    allowed = {}  # path -> its method, for a 405 from the catch-all below

    def get(path: str, endpoint: Callable, response_model: Any, summary: str) -> None:
        router.add_api_route(path, endpoint, methods=["GET"], response_model=response_model, summary=summary)
        allowed[path] = "GET"

    # First the busy route: routes are matched in order (and the service's fast lane answers it ahead of them).
    async def infer(body: bytes, headers: Headers | None) -> Response | None:
        """The answer to an inference request. With `headers` None (the fast lane's call), None for a body that is
        no inference request: the standard way answers it, with the headers its error may name."""
        try:
            content = await model.infer(body)
        except ValidationError as error:
            if headers is None:
                return None
            if "inference-header-content-length" in headers:  # binary tensors after the JSON, which then fails
                return _error(400, "the binary tensor extension is not supported: send the tensors as JSON")
            return _error(400, _describe(error))
        except PatternError as error:
            return _error(400 if error.status_code == 422 else error.status_code, error.detail)
        return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    # The body's schema, for the API docs; the route's handler is `infer`, which parses the body itself.
    async def documented(request: model.documented_request) -> InferenceResponse: ...  # type: ignore[valid-type]

    router.add_api_route(
        base + "/infer",
        documented,
        methods=["POST"],
        response_model=InferenceResponse,
        summary="Predict a tensor (open inference protocol)",
        responses={
            400: {"description": "Not a valid inference request for this model.", "model": InferenceError},
            413: {
                "description": "More items than the model takes at once (`error`), or a body over the size limit "
                "(`detail`, answered before the body is read).",
                "model": InferenceError | ErrorMessage,
            },
        },
        route_class_override=_lane_route(infer),
        openapi_extra={OWN_INVALID_STATUS: 400},  # the protocol's 400 for any invalid request, never a 422
    )
    allowed[base + "/infer"] = "POST"

    # The app serves only once its model is loaded (create_serving_app loads it first): live means ready.
    ready = {200: {"description": "Yes (the body is empty).", "content": None}}
    for path, summary in [
        ("/v2/health/live", "Whether the server is live"),
        ("/v2/health/ready", "Whether every model is ready"),
        (base + "/ready", "Whether the model is ready"),
    ]:
        router.add_api_route(path, _empty, methods=["GET"], response_class=Response, responses=ready, summary=summary)
        allowed[path] = "GET"
    server = {"name": "mlpatterns", "version": __version__, "extensions": []}
    get("/v2", lambda: server, ServerMetadata, "Server metadata (open inference protocol)")
    get(base, lambda: model.metadata, ModelMetadata, "Model metadata: its input and output tensors")

    # Last: whatever no route above matched, answered as the protocol answers (a model server says which models
    # it has).
    @router.api_route("/v2/models/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
    def other_model(request: Request, rest: str):
        path = request.url.path
        if path in allowed:
            return _error(405, f"{path} takes {allowed[path]}", headers={"Allow": allowed[path]})
        if path.startswith(base + "/versions/"):  # /v2/models/iris_svc/versions/1/infer -> .../iris_svc/infer
            after_version = path.removeprefix(base + "/versions/").partition("/")[2]
            unversioned = f"{base}/{after_version}".rstrip("/")
            return _error(404, f"{name!r} has no versions to choose from: use {unversioned}")
        return _error(404, f"no model at {path}: this server serves {name!r} (GET {base})")


class _Model:
    """One model as the protocol sees it: its metadata, its request models and its inference."""

    def __init__(self, plane: DataPlane, name: str, sample_input: list | np.ndarray, value_limit: float | None):
        self.plane = plane
        self.name = name
        predictor = plane.predictor
        self.input_name = predictor.input_name
        if plane.preprocess is not None:  # items are encoded (base64 images): a 1-D tensor of strings
            item, self.datatype, self.item_shape, self.dtype = plane.preprocess.item_type, "BYTES", [], None
        else:
            bounds = (
                None if value_limit is None else {"exclusiveMinimum": -value_limit, "exclusiveMaximum": value_limit}
            )
            item, self.datatype = feature(bounds), datatype(predictor.input_dtype)
            self.item_shape = predictor.feature_shape
            # Numbers are read as float64, exact for any JSON number; the data plane casts them to the model's
            # dtype and refuses what overflows it, as it does for /predict.
            self.dtype = np.dtype(np.float64 if np.dtype(predictor.input_dtype).kind == "f" else predictor.input_dtype)
        sample = plane.predict(sample_input)  # the answer's outputs and parameters, once
        self.outputs = {
            LABEL_OUTPUT: TensorMetadata(name=LABEL_OUTPUT, datatype="BYTES", shape=[-1]),
            predictor.score_output: TensorMetadata(
                name=predictor.score_output, datatype=datatype(sample.scores.dtype), shape=[-1, sample.scores.shape[1]]
            ),
        }
        for field, value in sample.extra.items():
            if not _is_parameter(value):
                value = np.asarray(value)
                shape = [-1, *value.shape[1:]]
                self.outputs[field] = TensorMetadata(name=field, datatype=datatype(value.dtype), shape=shape)
        self.metadata = ModelMetadata(
            name=self.name,
            platform=PLATFORM,
            inputs=[TensorMetadata(name=self.input_name, datatype=self.datatype, shape=[-1, *self.item_shape])],
            outputs=list(self.outputs.values()),
        ).model_dump()
        rank = 1 + len(self.item_shape)
        nested = first_error_only(item)
        for _ in range(rank - 1):
            nested = first_error_only(nested)
        example = self._example(sample_input)
        # Parsed with flat data first (the usual, and the cheapest), with nested data when that is what came.
        self.flat_request = self._request_model(first_error_only(item), rank, example)
        self.nested_request = self._request_model(nested, rank, example) if rank > 1 else self.flat_request
        self.documented_request = self._request_model(
            Annotated[first_error_only(item) | nested, Field(union_mode="left_to_right")], rank, example
        )

    def _request_model(self, data, rank: int, example: dict | None) -> type[BaseModel]:
        shape = Annotated[list[Annotated[int, Field(strict=True, ge=0)]], Field(min_length=rank, max_length=rank)]
        request_input = create_model(
            "RequestInput",
            __doc__="The model's input tensor: the batch's items, flat (row-major order) or nested as deep as "
            "the shape.",
            name=(Literal[self.input_name], ...),  # type: ignore[valid-type]
            shape=(shape, Field(description=f"N items: [N, ...]; the model's is {[-1, *self.item_shape]}.")),
            datatype=(Literal[self.datatype], ...),  # type: ignore[valid-type]
            parameters=(Parameters | None, None),
            data=(data, ...),
        )
        request_output = create_model(
            "RequestOutput",
            name=(Literal[tuple(self.outputs)], ...),  # type: ignore[valid-type]
            parameters=(Parameters | None, None),
        )
        config = ConfigDict(json_schema_extra={"examples": [example]}) if example else None
        return create_model(
            "InferenceRequest",
            __config__=config,
            id=(str | None, Field(None, description="Echoed in the answer.")),
            parameters=(Parameters | None, None),
            inputs=(Annotated[list[request_input], Field(min_length=1, max_length=1)], ...),
            outputs=(
                list[request_output] | None,
                Field(None, description="The outputs to answer, by name; all of them if absent."),
            ),
        )

    def _example(self, sample_input: list | np.ndarray) -> dict | None:
        """The sample batch as a request: flat, where it is small enough to read in the API docs."""
        if self.dtype is None:
            return None  # an image, kilobytes of base64
        values = np.asarray(sample_input)  # as written: 5.1, not float32's 5.099999904632568
        if values.size > 64:
            return None
        tensor = {"name": self.input_name, "shape": list(values.shape), "datatype": self.datatype}
        return {"id": "1", "inputs": [{**tensor, "data": values.reshape(-1).tolist()}]}

    async def infer(self, body: bytes) -> dict:
        if not body:
            raise InvalidInput("body: Field required (an inference request, a JSON object with `inputs`)")
        parsed = self._parse(body)
        tensor = parsed.inputs[0]
        answer = await self.plane.predict_async(self._batch(tensor.shape, tensor.data))
        wanted = [output.name for output in parsed.outputs] if parsed.outputs else list(self.outputs)
        content = {"model_name": self.name, "outputs": self._outputs(answer, wanted)}
        if parsed.id is not None:
            content["id"] = parsed.id
        if answer.extra:
            parameters = {name: value for name, value in answer.extra.items() if _is_parameter(value)}
            if parameters:
                content["parameters"] = parameters
        return content

    def _parse(self, body: bytes) -> BaseModel:
        try:
            return self.flat_request.model_validate_json(body)
        except ValidationError as error:
            # Nested data fails the flat model at its first value, a list: parse it as nested.
            nested = any(e["loc"][-2:] == ("data", 0) and isinstance(e.get("input"), list) for e in error.errors())
            if not nested or self.nested_request is self.flat_request:
                raise
        return self.nested_request.model_validate_json(body)

    def _batch(self, shape: list[int], data: list) -> np.ndarray | list:
        """The tensor as the data plane's batch (the encoded items themselves where a preprocess hook takes them)."""
        if shape[1:] != self.item_shape and any(
            e not in (-1, got) for e, got in zip(self.item_shape, shape[1:], strict=True)
        ):
            raise InvalidInput(f"inputs[0].shape: the model takes {[-1, *self.item_shape]}; got {shape}")
        size = math.prod(shape)
        if self.dtype is None or not data or not isinstance(data[0], list):
            if len(data) != size:
                raise InvalidInput(f"inputs[0]: shape {shape} holds {size} values; data has {len(data)}")
            return data if self.dtype is None else np.asarray(data, self.dtype).reshape(shape)
        try:
            batch = np.asarray(data, self.dtype)
        except ValueError:
            raise InvalidInput("inputs[0].data: nested lists of unequal length") from None
        if list(batch.shape) != shape:
            raise InvalidInput(f"inputs[0]: data nested as {list(batch.shape)}; the shape says {shape}")
        return batch

    def _outputs(self, answer: Answer, wanted: list[str]) -> list[dict]:
        outputs = []
        for name in wanted:
            if name == LABEL_OUTPUT:
                values = answer.labels
                shape = [len(values)]
            else:
                array = answer.scores if name == self.plane.predictor.score_output else np.asarray(answer.extra[name])
                values, shape = array.reshape(-1), list(array.shape)
            outputs.append({"name": name, "shape": shape, "datatype": self.outputs[name].datatype, "data": values})
        return outputs


def _is_parameter(value) -> bool:
    return isinstance(value, str | int | float | bool)


def _describe(error: ValidationError) -> str:
    """A request's errors in one line, each where, then what (pydantic's message); the first few only (each list
    of values stops at its first bad one anyway)."""
    errors = error.errors(include_url=False)
    if errors[0]["type"] == "json_invalid":
        return f"JSON decode error: {errors[0].get('ctx', {}).get('error', 'not JSON')}"
    described = []
    for each in errors[:MAX_ERRORS]:
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in each["loc"]).lstrip(".")
        described.append(f"{where or 'body'}: {_PYTHON_MESSAGES.get(each['type'], each['msg'])}")
    more = len(errors) - MAX_ERRORS
    return "; ".join(described) + (f"; and {more} more" if more > 0 else "")


MAX_ERRORS = 4


# pydantic words a few type errors of JSON input in JSON's terms ("an object", "a valid array"); every other answer
# of the project's services says them in Python's, as FastAPI's validation does.
_PYTHON_MESSAGES = {
    "model_type": "Input should be a valid dictionary or object to extract fields from",
    "dict_type": "Input should be a valid dictionary",
    "list_type": "Input should be a valid list",
}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps({"error": message}), status, headers, media_type="application/json")


def _empty() -> Response:
    return Response()


def _lane_route(infer: Callable[[bytes, Headers | None], Awaitable[Response | None]]) -> type[APIRoute]:
    """A route class whose handler is `infer` itself (no dependency solving, no response model: the endpoint
    declared on the route documents the request and the answer, and is never called), and which the service's
    fast lane answers (`answer`), whatever the content type: the body is JSON whatever a client calls it."""

    class LaneRoute(APIRoute):
        json_only = False

        def get_route_handler(self):
            async def handle(request: Request) -> Response:
                return await infer(await request.body(), request.headers)

            return handle

        async def answer(self, body: bytes, path_params: dict) -> Response | None:
            return await infer(body, None)

    return LaneRoute
