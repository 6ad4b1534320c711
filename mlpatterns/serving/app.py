"""The serving app factory: a FastAPI app around one OnnxPredictor.

Build it with settings (`create_serving_app(ServingSettings())`); gunicorn calls a pattern's `create_app()`,
once per worker, after the fork, so every worker loads its own onnxruntime session.
"""

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline

from mlpatterns.errors import PayloadTooLarge, install_error_handlers
from mlpatterns.logging import configure_logging
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.serving.metrics import metrics_response
from mlpatterns.serving.middleware import BodySizeLimitMiddleware, MetricsMiddleware
from mlpatterns.serving.schemas import Health, LabelsResponse, Metadata, PredictRequest, ScoresResponse
from mlpatterns.settings import ServingSettings


def prediction_router(predictor: OnnxPredictor, settings: ServingSettings) -> APIRouter:
    """The book's endpoints. The sample's answer is computed once, from the model itself."""
    router = APIRouter()
    sample = predictor.check(settings.sample_input)
    sample_prediction = predictor.predict(sample)
    sample_scores = sample_prediction.scores

    def predict(request: PredictRequest):
        if len(request.data) > settings.max_batch_rows:
            raise PayloadTooLarge(f"data has {len(request.data)} rows; at most {settings.max_batch_rows} are accepted")
        return predictor.predict(request.data)

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

    # async: one onnxruntime call on a batch takes microseconds, less than a hop to the thread pool would.
    @router.post("/predict", response_model=ScoresResponse)
    async def predict_scores(request: PredictRequest):
        return {"prediction": predict(request).scores.tolist()}

    @router.post("/predict/label", response_model=LabelsResponse)
    async def predict_label(request: PredictRequest):
        return {"prediction": [predictor.label_of(c) for c in predict(request).classes]}

    @router.get("/metrics", include_in_schema=False)
    def metrics():
        return metrics_response()

    return router


def create_serving_app(settings: ServingSettings, predictor: OnnxPredictor | None = None) -> FastAPI:
    configure_logging(settings.log_level, settings.log_json)
    if predictor is None:
        predictor = OnnxPredictor(settings.model_path, settings.resolved_label_path).load()
    app = FastAPIOffline(title=settings.api_title, description=settings.api_description, version=settings.api_version)
    app.state.predictor = predictor
    install_error_handlers(app)
    app.include_router(prediction_router(predictor, settings))
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    return app
