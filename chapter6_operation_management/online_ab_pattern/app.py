"""Model A or model B of the online A/B pattern: the iris API whose every answer names, in `mode`, the model
that gave it.

One module and one image, run twice: with MODEL_PATH=models/iris_svc/model.onnx it is arm A (`iris-svc`, the
current model), with models/iris_rf/model.onnx arm B (`iris-rf`, the candidate). The proxy in front (HAProxy
locally and in compose, Istio in Kubernetes) sends each request to one of them; the caller learns which from
`mode`, the model's file name as the original sample named it:

    POST /predict/label {"data": [[5.1, 3.5, 1.4, 0.2]]}  ->  {"prediction": ["setosa"], "mode": "iris_rf.onnx"}
"""

from fastapi import FastAPI
from pydantic import ConfigDict, Field

from mlpatterns.dataplane import Answer
from mlpatterns.serving.app import create_serving_app
from mlpatterns.serving.schemas import LabelsResponse, ScoresResponse
from mlpatterns.settings import ModelServingSettings

MODE = Field(description="The model that answered, by file name: iris_svc.onnx (arm A) or iris_rf.onnx (arm B).")


class Settings(ModelServingSettings):
    model_name: str | None = Field(
        None,
        description="The model's name in `mode` and in metrics; default: the original sample's file name of the "
        "model, its directory's name + .onnx (models/iris_rf/model.onnx -> iris_rf.onnx).",
    )

    served_model_name: str | None = Field(
        "iris",
        description="Both arms' name in the open inference protocol (/v2/models/iris/infer), so a V2 client reaches "
        "either through the split; the answer's `parameters.mode` says which answered.",
    )

    @property
    def mode(self) -> str:
        return self.model_name or f"{self.model_path.parent.name}.onnx"


class ModeScoresResponse(ScoresResponse):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"prediction": [[0.971, 0.016, 0.013]], "mode": "iris_svc.onnx"}]}
    )

    mode: str = MODE


class ModeLabelsResponse(LabelsResponse):
    model_config = ConfigDict(json_schema_extra={"examples": [{"prediction": ["setosa"], "mode": "iris_rf.onnx"}]})

    mode: str = MODE


def name_the_model(answer: Answer, batch) -> Answer:
    """The data plane's postprocess hook: the answer says which model gave it."""
    return answer.with_extra(mode=answer.model)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_serving_app(
        settings.model_copy(update={"model_name": settings.mode}),
        postprocess=name_the_model,
        responses=(ModeScoresResponse, ModeLabelsResponse),
    )
