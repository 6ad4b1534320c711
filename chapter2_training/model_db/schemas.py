"""Request and response bodies. The JSON keys are the original sample's; what PostgreSQL cannot store is a 422
here (a NUL character, an unpaired surrogate, NaN, a name over 255 characters), never a database error.
"""

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

MAX_JSON_DEPTH = 32


def _storable_text(text: str) -> str:
    if "\x00" in text:
        raise ValueError("text must not contain NUL (\\u0000) characters")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode: unpaired surrogates (\\ud800-\\udfff) cannot be stored") from None
    return text


def _storable(value: dict[str, Any]) -> dict[str, Any]:
    """Walk the object without recursion: PostgreSQL's jsonb takes neither NaN/Infinity nor NUL characters."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"objects nested deeper than {MAX_JSON_DEPTH} levels are not accepted")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("NaN and infinities are not JSON numbers")
        if isinstance(item, str):
            _storable_text(item)
        elif isinstance(item, dict):
            pending += [(key, depth) for key in item] + [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            pending += [(v, depth + 1) for v in item]
    return value


# No NUL, in the JSON Schema as a pattern too (the validator's own message says why); an unpaired surrogate is no
# Unicode string at all, so JSON Schema has nothing to say about it.
NO_NUL = Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})
Text = Annotated[str, AfterValidator(_storable_text), NO_NUL]
Key = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(_storable_text), NO_NUL]
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is a 422, not silently dropped


class ProjectCreate(Body):
    project_name: Key
    description: Text | None = None


class ModelCreate(Body):
    project_id: Key
    model_name: Key
    description: Text | None = None


class ExperimentCreate(Body):
    model_id: Key
    model_version_id: Key
    parameters: JsonObject | None = None
    training_dataset: Text | None = None
    validation_dataset: Text | None = None
    test_dataset: Text | None = None
    evaluations: JsonObject | None = None
    artifact_file_paths: JsonObject | None = None


class EvaluationsMerge(Body):
    evaluations: JsonObject = Field(description="Keys to add to (or replace in) the stored evaluations.")


class ArtifactFilePathsMerge(Body):
    artifact_file_paths: JsonObject = Field(description="Keys to add to (or replace in) the stored paths.")


class Row(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ProjectOut(Row):
    project_id: str
    project_name: str
    description: str | None
    created_datetime: datetime


class ModelOut(Row):
    model_config = ConfigDict(protected_namespaces=())  # `model_id` and `model_name` are this API's own keys

    model_id: str
    project_id: str
    model_name: str
    description: str | None
    created_datetime: datetime


class ExperimentOut(Row):
    model_config = ConfigDict(protected_namespaces=())

    experiment_id: str
    model_id: str
    model_version_id: str
    parameters: dict[str, Any] | None
    training_dataset: str | None
    validation_dataset: str | None
    test_dataset: str | None
    evaluations: dict[str, Any] | None
    artifact_file_paths: dict[str, Any] | None
    created_datetime: datetime


class Health(BaseModel):
    health: str


class Page(BaseModel):
    """The slice of a list route's rows to answer: `?limit=100&offset=0&order=asc` (oldest first) by default, so
    a list never answers every row of a growing table at once; `order=desc` gives the newest first."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=1000, description="At most this many rows (1 to 1000).")
    offset: int = Field(0, ge=0, le=2**63 - 1, description="Rows to skip, in the order asked for.")  # SQL's bigint
    order: Literal["asc", "desc"] = Field("asc", description="By creation time: oldest (asc) or newest (desc) first.")
