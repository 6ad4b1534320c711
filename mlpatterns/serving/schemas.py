"""Request and response bodies of the prediction API (the original sample's JSON keys, every item answered)."""

from functools import cache
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, create_model

from mlpatterns.settings import IRIS_SAMPLE

# Strict: "1.5" (a string), true and null are type errors, not numbers; NaN and infinities are refused too.
Feature = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def first_error_only(item):
    """A list type that stops at its first bad element: a bad 10,000-row batch, or an image of 3,072 numbers,
    gets a 422 naming one error, not a megabyte of them (and validation stops early)."""
    return Annotated[list[item], Field(fail_fast=True)]


def predict_request(item_ndim: int, item_type=None) -> type[BaseModel]:
    """The request body `{"data": [item, ...]}` of a model whose items have `item_ndim` axes: each item nested
    lists of numbers that deep (1: a row of features; 3: an image, channels x rows x columns), or, where a
    preprocess hook takes the items, its `item_type` (e.g. a base64 image, a string).

    The depth is checked here, the exact item shape by the predictor against the model's input. Cached: one
    class per kind of item, so the OpenAPI schema names each once."""
    return _predict_request(item_ndim, item_type)  # positional: `cache` keys f(1) and f(1, None) apart


@cache
def _predict_request(item_ndim: int, item_type) -> type[BaseModel]:
    if item_type is not None:
        item, name = item_type, "PredictEncodedRequest"
    else:
        item, name = Feature, "PredictRequest" if item_ndim == 1 else f"PredictRequest{item_ndim}D"
        for _ in range(item_ndim):
            item = first_error_only(item)
    config = ConfigDict(extra="forbid")
    if item_ndim == 1 and item_type is None:  # an example image would fill the docs page
        config["json_schema_extra"] = {"examples": [{"data": IRIS_SAMPLE}]}
    return create_model(
        name,
        __config__=config,
        data=(list[item], Field(min_length=1, fail_fast=True, description="A batch; every item is predicted.")),
    )


PredictRequest = predict_request(1)  # tabular rows: {"data": [[f, f, f, f], ...]}


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
