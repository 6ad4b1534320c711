"""The serving app factory: the book's HTTP routes around one model's data plane (`mlpatterns.dataplane`).

Build it with settings (`create_serving_app(ModelServingSettings())`); gunicorn calls a pattern's `create_app()`,
once per worker, after the fork, so every worker loads its own onnxruntime session.

The two POST routes are the hot path; `make bench P=chapter4_serving_patterns/web_single_pattern` measures them
against a bare FastAPI echo on the same server. What they do for speed is commented where it is done.
"""

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError

from mlpatterns.batching import enable_batching
from mlpatterns.dataplane import Answer, DataPlane, Postprocess, Preprocess
from mlpatterns.predictor import OnnxPredictor, value_limit
from mlpatterns.serving.schemas import (
    Health,
    LabelsResponse,
    Metadata,
    ScoresResponse,
    array_parser,
    predict_request,
)
from mlpatterns.serving.service import create_service_app
from mlpatterns.serving.v2 import add_v2_routes
from mlpatterns.settings import ModelServingSettings


class PredictRequestRoute(APIRoute):
    """A POST route whose endpoint takes one request model (`predict_request(...)`), and the path's parameters if
    it has any, and returns a Response: a route the service's fast lane answers (`...middleware.FastLane`).

    The lane hands `answer` a JSON body; pydantic's Rust core parses and validates it in one pass, and the
    endpoint gets the model, skipping FastAPI's json.loads, dependency solving and response handling, a good
    part of a request's cost. A body that fails validation (or any other content type) goes FastAPI's standard
    way, so every error reads exactly as before; the lane accepts only bodies the standard way accepts too,
    with the same values: both validate with the model the endpoint declares as its body, and each path
    parameter with its annotation."""

    json_only = True  # the lane takes `Content-Type: application/json` alone, as FastAPI's standard way does

    def __init__(self, path: str, endpoint: Callable, **kwargs):
        super().__init__(path, endpoint, **kwargs)
        self.request_model = self.body_field.field_info.annotation
        self.parse_arrays = array_parser(self.request_model)  # None unless the model was made with `arrays`
        # The path's parameters (`/predict/{job_id}`), each validated by its annotation, as FastAPI does.
        self.body_name = self.body_field.name
        self.path_parameters = {
            (field.alias, field.name): TypeAdapter(Annotated[field.field_info.annotation, field.field_info])
            for field in self.dependant.path_params
        }

    async def answer(self, body: bytes, path_params: dict) -> Response | None:
        """The endpoint's answer to a JSON body and the path's parameters, or None where either does not validate."""
        # A row or two validate faster than they parse into an array; a batch the other way round.
        request = self.parse_arrays(body) if self.parse_arrays is not None and len(body) > 256 else None
        try:
            if request is None:
                request = self.request_model.model_validate_json(body)
            arguments = {
                name: adapter.validate_python(path_params[alias])
                for (alias, name), adapter in self.path_parameters.items()
            }
        except ValidationError:
            return None  # the standard way reports it
        if not arguments:
            return await self.endpoint(request)
        return await self.endpoint(**arguments, **{self.body_name: request})


class JSONAnswer(Response):
    """An answer of JSON bytes: Starlette's Response less the work of its constructor (rendering, header
    building), a few percent of a one-row request."""

    media_type = "application/json"

    def __init__(self, body: bytes):
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]


def json_response(content: dict) -> Response:
    # orjson writes the same bytes as FastAPI's response_model serialization here (shortest round-trip
    # floats) at a fraction of the cost; the response_model stays on the route for the API docs. Extra fields
    # may hold numpy arrays and scalars too.
    return JSONAnswer(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY))


def request_model(plane: DataPlane, *, arrays: bool = False) -> type[BaseModel]:
    """The request body of the plane's model: its item shape, batch limit and value range in the JSON Schema.
    `arrays`: numbers may arrive as one numpy array (`predict_request`), for endpoints that only predict them."""
    item_type = getattr(plane.preprocess, "item_type", None)
    return predict_request(
        tuple(plane.predictor.feature_shape),
        item_type,
        max_items=plane.max_items,
        value_limit=value_limit(plane.predictor.input_dtype),
        arrays=arrays,
    )


def add_info_routes(
    router: APIRouter,
    plane: DataPlane,
    sample_input: list,
    sample: np.ndarray,
    sample_answer: Answer,
    *,
    metadata_model: type[Metadata] = Metadata,
    more_metadata: dict | None = None,
) -> None:
    """/health, /metadata and /label of a model's service. `/metadata` describes the sample and the model's answer
    to it, plus `more_metadata` (documented by `metadata_model`, a subclass of Metadata)."""
    sample_scores = sample_answer.scores
    described = {
        "data_type": sample.dtype.name,
        "data_structure": str(tuple(sample.shape)),
        "data_sample": sample_input,
        "prediction_type": sample_scores.dtype.name,
        "prediction_structure": str(tuple(sample_scores.shape)),
        "prediction_sample": sample_scores.tolist(),
        **(more_metadata or {}),
    }

    @router.get("/health", response_model=Health)
    def health():
        return {"health": "ok"}

    @router.get("/metadata", response_model=metadata_model)
    def metadata():
        return described

    @router.get("/label", response_model=dict[str, str])
    def label():
        return {str(index): name for index, name in plane.predictor.labels.items()}


def add_prediction_routes(
    router: APIRouter,
    plane: DataPlane,
    sample_input: list,
    responses: tuple[type[BaseModel], type[BaseModel]] = (ScoresResponse, LabelsResponse),
    served_name: str | None = None,
) -> None:
    """The book's endpoints around a data plane, and the open inference protocol's (`mlpatterns.serving.v2`, the
    model named `served_name`, by default the plane's). The sample's answer is computed once, from the model itself.

    Each answer is `{"prediction": ...}` plus whatever the plane's postprocess hook put in `answer.extra`;
    `responses` (scores, labels), subclasses of ScoresResponse and LabelsResponse, document those fields."""
    scores_response, labels_response = responses
    sample = plane.to_input(sample_input)
    sample_answer = plane.predict_input(sample)
    sample_scores = sample_answer.scores
    PredictRequest = request_model(plane, arrays=True)  # the endpoints below only hand `data` to the plane
    add_info_routes(router, plane, sample_input, sample, sample_answer)

    @router.get("/predict/test", response_model=scores_response)
    def predict_test():
        return json_response({"prediction": sample_scores.tolist(), **sample_answer.extra})

    @router.get("/predict/test/label", response_model=labels_response)
    def predict_test_label():
        return json_response({"prediction": sample_answer.labels, **sample_answer.extra})

    # async: a small batch is predicted on the event loop, a large one in the thread pool (DataPlane.predict_async).
    async def predict_scores(request: PredictRequest):
        answer = await plane.predict_async(request.data)
        return json_response({"prediction": answer.scores.tolist(), **answer.extra})

    async def predict_label(request: PredictRequest):
        answer = await plane.predict_async(request.data)
        return json_response({"prediction": answer.labels, **answer.extra})

    add_post_routes(
        router, [("/predict", predict_scores, scores_response), ("/predict/label", predict_label, labels_response)]
    )
    add_v2_routes(router, plane, sample_input, value_limit=value_limit(plane.predictor.input_dtype), name=served_name)


def add_post_routes(router: APIRouter, routes: list[tuple[str, Callable, Any]], **options) -> None:
    """(path, endpoint, response model) as POST routes the service's fast lane answers (PredictRequestRoute);
    `options` go to every route (e.g. `responses`, for the API docs)."""
    # add_api_route rather than the decorator: only it takes a route class.
    for path, endpoint, response_model in routes:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            response_model=response_model,
            route_class_override=PredictRequestRoute,
            **options,
        )


def create_serving_app(
    settings: ModelServingSettings,
    predictor: OnnxPredictor | None = None,
    *,
    preprocess: Preprocess | None = None,
    postprocess: Postprocess | None = None,
    responses: tuple[type[BaseModel], type[BaseModel]] = (ScoresResponse, LabelsResponse),
) -> FastAPI:
    """The serving app of `settings`' model (or of `predictor`, already loaded), with the data plane's hooks;
    `responses` documents the fields a postprocess hook adds (see add_prediction_routes)."""
    if predictor is None:
        predictor = OnnxPredictor(settings.model_path, settings.resolved_label_path).load()
    plane = DataPlane(
        predictor,
        name=settings.model_name,
        max_items=settings.max_batch_rows,
        preprocess=preprocess,
        postprocess=postprocess,
    )
    enable_batching(plane, settings)
    app = create_service_app(
        settings,
        lambda router: add_prediction_routes(
            router, plane, settings.sample_input, responses, served_name=settings.served_model_name
        ),
    )
    app.state.plane = plane
    return app


def create_app() -> FastAPI:
    """The plain model API, configured by the environment (MODEL_PATH, WORKERS, ...): what gunicorn and the runner
    call as `mlpatterns.serving.app:create_app()` for a pattern whose service is the shared app and nothing more
    (the service a load test, a mirror or a split sends requests to)."""
    return create_serving_app(ModelServingSettings())
