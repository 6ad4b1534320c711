"""The answer of the prediction service, read by the prep service: the one contract between the two besides
the tensor itself (mlpatterns.tensors)."""

from pydantic import BaseModel, ConfigDict, Field


class TensorPrediction(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={"examples": [{"model": "cifar10", "prediction": [[0.998] + [0.0002] * 9], "labels": ["0"]}]},
    )

    model: str = Field(description="The name of the model that answered.")
    prediction: list[list[float]] = Field(description="One row of class probabilities per image of the tensor.")
    labels: list[str] = Field(description="The most likely label of each image.")
