"""Request and response bodies of the prediction API (the original sample's JSON keys, every row answered)."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from mlpatterns.settings import IRIS_SAMPLE

# Strict: "1.5" (a string), true and null are type errors, not numbers; NaN and infinities are refused too.
Feature = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"data": IRIS_SAMPLE}]})

    data: list[list[Feature]] = Field(min_length=1, description="A batch of rows; every row is predicted.")


class ScoresResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"prediction": [[0.971, 0.016, 0.013]]}]})

    prediction: list[list[float]] = Field(description="One row of class probabilities (or scores) per input row.")


class LabelsResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"prediction": ["setosa"]}]})

    prediction: list[str] = Field(description="The most likely label of each input row.")


class Health(BaseModel):
    health: str


class Metadata(BaseModel):
    data_type: str
    data_structure: str
    data_sample: list[list[float]]
    prediction_type: str
    prediction_structure: str
    prediction_sample: list[list[float]]
