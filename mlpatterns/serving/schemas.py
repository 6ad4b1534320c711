"""Request and response bodies of the prediction API (the original sample's JSON keys, every item answered)."""

from collections.abc import Callable
from functools import cache
from typing import Annotated

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, create_model

from mlpatterns.settings import IRIS_SAMPLE


def feature(json_schema: dict | None = None):
    """A number of an item. Strict: "1.5" (a string), true and null are type errors, not numbers; NaN and
    infinities are refused too. `json_schema` adds to its JSON Schema only."""
    return Annotated[float, Field(strict=True, allow_inf_nan=False, json_schema_extra=json_schema)]


def first_error_only(item, json_schema: dict | None = None):
    """A list type that stops at its first bad element: a bad 10,000-row batch, or an image of 3,072 numbers,
    gets a 422 naming one error, not a megabyte of them (and validation stops early). `json_schema` adds to the
    list's JSON Schema only."""
    return Annotated[list[item], Field(fail_fast=True, json_schema_extra=json_schema)]


def predict_request(
    item_shape: int | tuple[int, ...],
    item_type=None,
    *,
    max_items: int | None = None,
    value_limit: float | None = None,
    arrays: bool = False,
) -> type[BaseModel]:
    """The request body `{"data": [item, ...]}` of a model whose items have the shape `item_shape` (or just that
    many axes, when an int): each item nested lists of numbers that deep (1: a row of features; 3: an image,
    channels x rows x columns), or, where a preprocess hook takes the items, its `item_type` (e.g. a base64
    image, a string).

    Validation checks the depth and the types; the exact item shape, the batch size (`max_items`) and the range
    of the values (below `value_limit` in magnitude, the model's dtype) are checked by the data plane, whose messages
    say what is wrong ("each row must have shape 4; got rows of shape 3") better than a list-length error would.
    They are in the JSON Schema all the same (minItems/maxItems per axis, exclusive bounds), so the documented
    contract is exactly what the service accepts; the validator, on the hot path, is the same either way.
    `arrays`: a body of numbers may reach the endpoint as one numpy array in `data` (see `array_parser`), for an
    endpoint that hands `data` to the data plane and nothing else.
    Cached: one class per kind of item, so the OpenAPI schema names each once."""
    shape = (-1,) * item_shape if isinstance(item_shape, int) else tuple(item_shape)
    arrays = arrays and item_type is None
    return _predict_request(shape, item_type, max_items, value_limit, arrays)  # positional: `cache` keys calls alike


@cache
def _predict_request(
    shape: tuple[int, ...], item_type, max_items: int | None, value_limit: float | None, arrays: bool
) -> type[BaseModel]:
    if item_type is not None:
        item, name = item_type, "PredictEncodedRequest"
    else:
        bounds = None if value_limit is None else {"exclusiveMinimum": -value_limit, "exclusiveMaximum": value_limit}
        item = feature(bounds)
        for size in reversed(shape):  # innermost axis first
            item = first_error_only(item, {"minItems": size, "maxItems": size} if size > 0 else None)
        name = "PredictRequest" if len(shape) == 1 else f"PredictRequest{len(shape)}D"
    config = ConfigDict(extra="forbid")
    # The iris example where it fits the model's rows (an example image would fill the docs page).
    if item_type is None and len(shape) == 1 and shape[0] in (-1, len(IRIS_SAMPLE[0])):
        config["json_schema_extra"] = {"examples": [{"data": IRIS_SAMPLE}]}
    batch = {"maxItems": max_items} if max_items is not None else None  # more: a 413, not a 422
    model = create_model(
        name,
        __config__=config,
        data=(
            list[item],
            Field(
                min_length=1, fail_fast=True, json_schema_extra=batch, description="A batch; every item is predicted."
            ),
        ),
    )
    if arrays:
        _ARRAY_DEPTH[model] = len(shape) + 1
    return model


_ARRAY_DEPTH: dict[type[BaseModel], int] = {}  # the request models made with `arrays`: the depth of their `data`


def array_parser(model: type[BaseModel]) -> Callable[[bytes], BaseModel | None] | None:
    """For a request model made with `arrays`: a parser of a JSON body straight into `model(data=<numpy array>)`,
    skipping the Python list of floats that validation would build (for a 1000-row batch, twice the time of
    parsing it). None for any other model.

    The parser answers only a body that validation would accept with the same numbers: an object with `data`
    alone, a non-empty list of items nested as deep as the model's, numbers only, all finite. For anything else
    it returns None, and the caller validates the body as usual, which reports what is wrong. numpy would take
    `true` as 1 where validation refuses it, so a body with any of JSON's literals is left to validation."""
    depth = _ARRAY_DEPTH.get(model)
    if depth is None:
        return None

    def parse(body: bytes) -> BaseModel | None:
        if b"true" in body or b"false" in body or b"null" in body:
            return None
        try:
            content = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if type(content) is not dict or len(content) != 1 or type(data := content.get("data")) is not list or not data:
            return None
        try:
            array = np.array(data)  # float64 or int64 for numbers; ragged lists raise, strings give another dtype
        except ValueError:
            return None
        # orjson refuses what would be infinite (1e999) and JSON has no NaN: the numbers are finite.
        if array.dtype.kind not in "fi" or array.ndim != depth:
            return None
        return model.model_construct(data=array)

    return parse


class ScoresResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"prediction": [[0.971, 0.016, 0.013]]}]})

    prediction: list[list[float]] = Field(description="One row of class probabilities (or scores) per input item.")


class LabelsResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"prediction": ["setosa"]}]})

    prediction: list[str] = Field(description="The most likely label of each input item.")


class Health(BaseModel):
    health: str


class Metadata(BaseModel):
    data_type: str
    data_structure: str
    data_sample: list = Field(description="A batch of one or more items, nested lists as deep as the model's input.")
    prediction_type: str
    prediction_structure: str
    prediction_sample: list[list[float]]


class TensorPrediction(BaseModel):
    """The service's answer: the one contract between it and its callers besides the tensor itself."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={"examples": [{"model": "cifar10", "prediction": [[0.998] + [0.0002] * 9], "labels": ["0"]}]},
    )

    model: str = Field(description="The name of the model that answered.")
    prediction: list[list[float]] = Field(description="One row of class probabilities per image of the tensor.")
    labels: list[str] = Field(description="The most likely label of each image.")
