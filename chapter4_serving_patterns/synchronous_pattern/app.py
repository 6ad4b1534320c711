"""The synchronous pattern's model server: the digits CNN behind TensorFlow Serving's REST API.

The original ran TF Serving with the image decoding and the label lookup inside the SavedModel; TF Serving's
binaries cannot be had here, so this server keeps its REST contract instead (same paths, same JSON shapes):

    GET  /v1/models/digits[/versions/0]             model status
    GET  /v1/models/digits[/versions/0]/metadata    signatures: `image` (base64 image) -> `output_0` (label)
    POST /v1/models/digits[/versions/0]:predict     {"instances": [image, ...]}       -> {"predictions": [...]}
                                                    {"inputs": {"image": [image, ...]}} -> {"outputs": [...]}

An image is base64 text of PNG, JPEG or any format Pillow reads (standard or URL-safe alphabet; the original's
client sent URL-safe), or TF Serving's binary form `{"b64": "..."}`. The signature `serving_default` answers a
label per image, as the original's did; `probabilities` answers the ten class probabilities.
"""

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlpatterns.batching import enable_batching
from mlpatterns.dataplane import Answer, DataPlane
from mlpatterns.errors import NotFound, PayloadTooLarge
from mlpatterns.images import Base64Image as CoreBase64Image
from mlpatterns.images import ImagePreprocessor, sample_digits
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.serving.app import json_response
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import ModelPath, ModelServingSettings


class SynchronousSettings(ModelServingSettings):
    """The model server's settings (environment variables of the same names, in upper case)."""

    model_path: ModelPath = Path("models/cifar10/model.onnx")
    model_name: str = Field(
        "digits", pattern=r"^[A-Za-z0-9_.-]+$", description="The name in the URLs, /v1/models/<MODEL_NAME>."
    )
    model_version: int = Field(0, ge=0, description="The one version served (the original served version 0).")
    api_title: str = "synchronous pattern: digits model server"
    max_body_bytes: int = Field(8 * 1_048_576, gt=0, description="Larger request bodies are refused with 413.")
    max_batch_rows: int = Field(256, gt=0, description="Batches with more images are refused with 413.")


# -- the request: TF Serving's row (`instances`) and columnar (`inputs`) formats ----------------------------

INPUT = "image"  # the signature's one input, named as the original's
SIGNATURES = {"serving_default": "output_0", "probabilities": "probabilities"}  # name -> its one output

# The core's image item, in either base64 alphabet here: TF Serving's clients send URL-safe.
Base64Image = Annotated[
    CoreBase64Image, Field(description="Base64 of an image file (PNG, JPEG...), standard or URL-safe alphabet.")
]


class Binary(BaseModel):
    """TF Serving's JSON form of a binary value."""

    model_config = ConfigDict(extra="forbid")
    b64: Base64Image


ImageValue = Base64Image | Binary


class NamedImage(BaseModel):
    """A row-format instance that names its input."""

    model_config = ConfigDict(extra="forbid")
    image: ImageValue


# A batch: at least one image (an empty one has nothing to answer).
Images = Annotated[list[ImageValue], Field(min_length=1)]


class NamedImages(BaseModel):
    """Columnar inputs by name."""

    model_config = ConfigDict(extra="forbid")
    image: Images


class TFPredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A pattern, not an enum: a value of the wrong type is then "not a valid string", as for any string field.
    signature_name: str = Field("serving_default", pattern="^(" + "|".join(SIGNATURES) + ")$")
    # Either one, never null (default None is only "not given"): the schema's oneOf below says so.
    instances: list[ImageValue | NamedImage] = Field(None, min_length=1, description="Row format: one per image.")
    inputs: Images | NamedImages = Field(None, description='Columnar format: the images, or {"image": [the images]}.')

    @model_validator(mode="after")
    def one_format(self) -> "TFPredictRequest":
        if (self.instances is None) == (self.inputs is None):
            raise ValueError(
                "give the images as 'instances' (row format) or as 'inputs' (columnar format): one of the two"
            )
        return self

    def images(self) -> list[str]:
        """The images as standard base64 text, whichever form the request gave them in."""
        if self.instances is not None:
            values = [item.image if isinstance(item, NamedImage) else item for item in self.instances]
        else:
            values = self.inputs.image if isinstance(self.inputs, NamedImages) else self.inputs
        return [(value.b64 if isinstance(value, Binary) else value).translate(_URL_SAFE) for value in values]


_URL_SAFE = str.maketrans("-_", "+/")  # URL-safe base64 -> the standard alphabet (a no-op on standard text)


def request_model(example: str) -> type[TFPredictRequest]:
    """The request with a real image as its documented example (docs, bad-input and contract tests send it)."""

    class PredictRequest(TFPredictRequest):
        model_config = ConfigDict(
            json_schema_extra={
                "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
                "examples": [{"instances": [example]}],
            }
        )

    return PredictRequest


# -- the answers ---------------------------------------------------------------------------------------------


class PredictResponse(BaseModel):
    predictions: list[str] | list[list[float]] | None = Field(None, description="Row format: one per instance.")
    outputs: list[str] | list[list[float]] | None = Field(None, description="Columnar format: one per input.")


class VersionState(BaseModel):
    version: str
    state: str
    status: dict[str, str]


class ModelStatus(BaseModel):
    model_version_status: list[VersionState]


def tensor(dtype: str, *dims: int) -> dict:
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
    }


def signature_defs(classes: int) -> dict:
    """TF Serving's description of the signatures, as GET .../metadata shows it."""
    image = {INPUT: {**tensor("DT_STRING", -1), "name": f"{INPUT}:0"}}
    outputs = {"serving_default": tensor("DT_STRING", -1), "probabilities": tensor("DT_FLOAT", -1, classes)}
    return {
        name: {
            "inputs": image,
            "outputs": {output: {**outputs[name], "name": f"{output}:0"}},
            "method_name": "tensorflow/serving/predict",
        }
        for name, output in SIGNATURES.items()
    }


def output(answer: Answer, signature: str) -> list:
    return answer.labels if signature == "serving_default" else answer.scores.tolist()


# -- the routes ----------------------------------------------------------------------------------------------


def add_routes(router: APIRouter, plane: DataPlane, settings: SynchronousSettings) -> None:
    name, version = settings.model_name, str(settings.model_version)
    samples = sample_digits()
    PredictRequest = request_model(samples["7"])
    available = {"version": version, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    status = {"model_version_status": [available]}
    metadata = {
        "model_spec": {"name": name, "signature_name": "", "version": version},
        "metadata": {"signature_def": {"signature_def": signature_defs(len(plane.predictor.labels))}},
    }
    test_answer = plane.predict(list(samples.values()))  # the shipped digits "0".."9", in order

    @router.get("/health")
    def health() -> dict[str, str]:
        return {"health": "ok"}

    async def predict(request: PredictRequest):
        images = request.images()
        if len(images) > plane.max_items:
            raise PayloadTooLarge(f"{len(images)} images in one request; at most {plane.max_items} are accepted")
        answer = await plane.predict_async(images)
        key = "predictions" if request.instances is not None else "outputs"
        return json_response({key: output(answer, request.signature_name)})

    def model_status():
        return status

    def model_metadata():
        return metadata

    # TF Serving answers for the latest version and for a named one alike.
    allowed = {}  # path -> its method
    for prefix in (f"/v1/models/{name}", f"/v1/models/{name}/versions/{version}"):
        for path, method, endpoint, response_model in [
            (prefix, "GET", model_status, ModelStatus),
            (prefix + "/metadata", "GET", model_metadata, dict[str, Any]),
            (prefix + ":predict", "POST", predict, PredictResponse),
        ]:
            router.add_api_route(path, endpoint, methods=[method], response_model=response_model)
            allowed[path] = method

    @router.get("/predict/test", response_model=PredictResponse)
    def predict_test():
        """The shipped sample digits "0" to "9", predicted when the server started."""
        return json_response({"predictions": test_answer.labels})

    # Last: what no route above matched. TF Serving says which model was asked for; so does this.
    @router.api_route("/v1/models/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
    def not_served(request: Request, rest: str):
        if request.url.path in allowed:
            raise HTTPException(405, "Method Not Allowed", headers={"Allow": allowed[request.url.path]})
        raise NotFound(f"no model at /v1/models/{rest}: this server serves {name!r}, version {version}")


def create_app(settings: SynchronousSettings | None = None) -> FastAPI:
    settings = settings or SynchronousSettings()
    predictor = OnnxPredictor(settings.model_path, settings.resolved_label_path).load()
    plane = DataPlane(
        predictor,
        name=settings.model_name,
        max_items=settings.max_batch_rows,
        preprocess=ImagePreprocessor(shape=(3, 32, 32)),  # the CNN normalises raw 0..255 pixels itself
    )
    enable_batching(plane, settings)
    app = create_service_app(settings, lambda router: add_routes(router, plane, settings))
    app.state.plane = plane
    return app
