"""The serving app factory: a FastAPI app around one OnnxPredictor.

Build it with settings (`create_serving_app(ModelServingSettings())`); gunicorn calls a pattern's `create_app()`,
once per worker, after the fork, so every worker loads its own onnxruntime session.

The two POST routes are the hot path; `make bench P=chapter4_serving_patterns/web_single_pattern` measures them
against a bare FastAPI echo on the same server. What they do for speed is commented where it is done.
"""

import math

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from mlpatterns.errors import PayloadTooLarge
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.serving.schemas import Health, LabelsResponse, Metadata, ScoresResponse, predict_request
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import ModelServingSettings

# Batches of up to this many input values are predicted on the event loop: check and onnxruntime take about
# 0.1 ms for an iris row, less than a hop to the thread pool and back (0.15 ms on a 2-core machine), and under
# 0.5 ms for 256 rows. Larger batches (one 3x32x32 image is 3,072 values, 0.3 ms; 256 images take 60 ms) go to
# the thread pool, so the event loop keeps serving other requests meanwhile.
INLINE_MAX_VALUES = 1024


class PredictRequestRoute(APIRoute):
    """A POST route taking a request model (`predict_request(...)`), with a fast path for the usual request.

    A body sent as `Content-Type: application/json` is parsed and validated in one pass by pydantic's Rust
    core and handed straight to the endpoint, skipping FastAPI's json.loads, dependency solving and response
    handling, a good part of a request's cost. Whatever the fast path does not accept (another content type,
    a body that fails validation) goes FastAPI's standard way, so every error reads exactly as before; the
    fast path accepts only bodies the standard way accepts too, with the same values: both validate with the
    model the endpoint declares as its one parameter. Endpoints return a Response.
    """

    def get_route_handler(self):
        standard = super().get_route_handler()
        endpoint = self.endpoint
        request_model = self.body_field.field_info.annotation

        async def handler(request: Request) -> Response:
            if request.headers.get("content-type") == "application/json":
                try:
                    body = request_model.model_validate_json(await request.body())
                except ValidationError:
                    pass  # the standard way below reports it (the body read is cached on the request)
                else:
                    return await endpoint(body)
            return await standard(request)

        return handler


def json_response(content: dict) -> Response:
    # orjson writes the same bytes as FastAPI's response_model serialization here (shortest round-trip
    # floats) at a fraction of the cost; the response_model stays on the route for the API docs.
    return Response(orjson.dumps(content), media_type="application/json")


def add_prediction_routes(router: APIRouter, predictor: OnnxPredictor, settings: ModelServingSettings) -> None:
    """The book's endpoints. The sample's answer is computed once, from the model itself."""
    sample = predictor.check(settings.sample_input)
    sample_prediction = predictor.predict(sample)
    sample_scores = sample_prediction.scores
    PredictRequest = predict_request(len(predictor.feature_shape))  # items as deep as the model's input
    item_values = math.prod(max(d, 1) for d in predictor.feature_shape)  # an axis of any size counts as 1

    async def predict(request: PredictRequest):
        items = request.data
        if len(items) > settings.max_batch_rows:
            noun = predictor.item_name
            raise PayloadTooLarge(f"data has {len(items)} {noun}s; at most {settings.max_batch_rows} are accepted")
        if len(items) * item_values <= INLINE_MAX_VALUES:
            return predictor.predict(items)
        return await run_in_threadpool(predictor.predict, items)  # the check too: np.asarray costs as much

    @router.get("/health", response_model=Health)
    def health():
        return {"health": "ok"}

    @router.get("/metadata", response_model=Metadata)
    def metadata():
        return {
            "data_type": sample.dtype.name,
            "data_structure": str(tuple(sample.shape)),
            "data_sample": settings.sample_input,
            "prediction_type": sample_scores.dtype.name,
            "prediction_structure": str(tuple(sample_scores.shape)),
            "prediction_sample": sample_scores.tolist(),
        }

    @router.get("/label", response_model=dict[str, str])
    def label():
        return {str(index): name for index, name in predictor.labels.items()}

    @router.get("/predict/test", response_model=ScoresResponse)
    def predict_test():
        return {"prediction": sample_scores.tolist()}

    @router.get("/predict/test/label", response_model=LabelsResponse)
    def predict_test_label():
        return {"prediction": [predictor.label_of(c) for c in sample_prediction.classes]}

    # async: a small batch is predicted on the event loop, a large one in the thread pool (see INLINE_MAX_VALUES).
    async def predict_scores(request: PredictRequest):
        return json_response({"prediction": (await predict(request)).scores.tolist()})

    async def predict_label(request: PredictRequest):
        return json_response({"prediction": [predictor.label_of(c) for c in (await predict(request)).classes]})

    # add_api_route rather than the decorator: only it takes a route class.
    for path, endpoint, response_model in [
        ("/predict", predict_scores, ScoresResponse),
        ("/predict/label", predict_label, LabelsResponse),
    ]:
        router.add_api_route(
            path, endpoint, methods=["POST"], response_model=response_model, route_class_override=PredictRequestRoute
        )


def create_serving_app(settings: ModelServingSettings, predictor: OnnxPredictor | None = None) -> FastAPI:
    if predictor is None:
        predictor = OnnxPredictor(settings.model_path, settings.resolved_label_path).load()
    app = create_service_app(settings, lambda router: add_prediction_routes(router, predictor, settings))
    app.state.predictor = predictor
    return app
