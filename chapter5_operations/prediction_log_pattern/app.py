"""The prediction log pattern's service: the iris API with outlier scores (mlpatterns.outlier), and a record of
every prediction on the prediction log (mlpatterns.prediction_log): stdout and LOG_PATH, which the shipper tails.

gunicorn runs `create_app()` in each worker: each has its own queue and writer thread, and all append to one
file. PREDICTION_LOG=off serves the same API with no records (the bench compares the two).
"""

from fastapi import FastAPI

from mlpatterns.outlier import OutlierServingSettings, create_outlier_app
from mlpatterns.prediction_log import PredictionLog, PredictionLogSettings


class Settings(OutlierServingSettings, PredictionLogSettings):
    pass


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if not settings.prediction_log:
        return create_outlier_app(settings)
    log = PredictionLog.from_settings(settings)
    return create_outlier_app(settings, on_prediction=log.put, lifespan=log.lifespan)
