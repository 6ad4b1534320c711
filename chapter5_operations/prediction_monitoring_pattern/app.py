"""The prediction monitoring pattern's API: the iris API with outlier scores (mlpatterns.outlier), storing every
answered request in PostgreSQL (store.RecordWriter), and what the monitor found:

    POST /predict, /predict/label, GET /predict/test...   the iris API; each answered POST stored (two tables,
                                                          one transaction); the test routes are not stored
    GET /alerts?limit=&since=                             the monitor's alerts, newest first
    GET /series, GET /dashboard                           the page: features and outlier rate over time, alerts
                                                          marked (dashboard.py)
    GET /metrics                                          also prediction_monitor_alerts_total{check,feature},
                                                          read from the alerts table at scrape time

gunicorn calls `create_app()` in each worker: each has its own engine and writer thread.
"""

import logging
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, Query
from prometheus_client.core import CounterMetricFamily
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from chapter5_operations.prediction_monitoring_pattern.dashboard import add_dashboard_routes
from chapter5_operations.prediction_monitoring_pattern.settings import ApiSettings
from chapter5_operations.prediction_monitoring_pattern.store import RecordWriter, alert_counts, list_alerts
from mlpatterns import metrics
from mlpatterns.drift import Reference
from mlpatterns.errors import InvalidInput, error_responses
from mlpatterns.outlier import PredictionEvent, create_outlier_app

logger = logging.getLogger(__name__)
STORED_ENDPOINTS = ("/predict", "/predict/label")  # as in the original: the GET test routes are not stored


class StoredAlert(BaseModel):
    alert_id: int
    check: str = Field(description="mean, psi or outlier_rate")
    feature: str | None = Field(description="The feature; null for the outlier rate.")
    value: float = Field(description="The relative mean shift, the PSI, or the outlier share.")
    threshold: float
    window_start: datetime
    window_end: datetime
    rows: int
    message: str
    created_datetime: datetime


class AlertCollector:
    """prediction_monitor_alerts_total, counted in the alerts table when /metrics is read (the table is right
    across workers and replicas; the monitor that writes it serves no port)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self):
        family = CounterMetricFamily(
            "prediction_monitor_alerts",
            "Alerts raised by the monitor, by check and feature",
            labels=["check", "feature"],
        )
        try:
            for check, feature, count in alert_counts(self.engine):
                family.add_metric([check, feature], count)
        except SQLAlchemyError as error:
            logger.warning("alerts not counted: %s", str(error).splitlines()[0])
            return
        yield family


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as UTC (a time without an offset is taken as UTC), or a 422 that says what was wrong."""
    try:
        moment = datetime.fromisoformat(text)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"since: expected an ISO 8601 time such as 2026-12-01T12:00:00Z, got {text[:40]!r}"
        ) from None


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    engine = settings.engine()
    writer = RecordWriter(engine, settings.record_queue_size)

    def on_prediction(event: PredictionEvent) -> None:
        if event.endpoint in STORED_ENDPOINTS:
            writer.put(event)

    store = on_prediction if settings.store_records else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        writer.start()
        yield
        writer.close()
        engine.dispose()

    app = create_outlier_app(settings, on_prediction=store, lifespan=lifespan)

    @app.get("/alerts", response_model=list[StoredAlert], responses=error_responses(422))
    def get_alerts(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        since: Annotated[
            str | None,
            Query(
                description="Only alerts of windows ending at or after this time (ISO 8601; without an offset: UTC).",
                json_schema_extra={"format": "date-time"},
            ),
        ] = None,
    ):
        return list_alerts(engine, limit, None if since is None else parse_time(since))

    add_dashboard_routes(app, engine, Reference.load(settings.reference_path), settings.thresholds())
    metrics.register_collector("prediction_monitor_alerts", AlertCollector(engine))
    app.state.engine = engine
    app.state.writer = writer
    return app
