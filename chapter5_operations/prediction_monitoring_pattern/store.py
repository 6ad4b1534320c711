"""Storing answered requests, reading windows of them back, and the alerts, in PostgreSQL.

`RecordWriter` is the API's `on_prediction` hook: the request's event goes on a queue (the request does not wait
for the database) and a thread in each worker writes it, one transaction per request holding both rows
(prediction_log and outlier_log under the same log_id): a record is stored whole or not at all, where the
original committed the two rows separately from a background task. Closing the writer (the app's shutdown)
writes what is queued first.
"""

import logging
import queue
import threading
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Engine, and_, func, insert, select

from chapter5_operations.prediction_monitoring_pattern.tables import alerts, outlier_log, prediction_log
from mlpatterns import metrics
from mlpatterns.drift import Alert
from mlpatterns.outlier import PredictionEvent

logger = logging.getLogger(__name__)

RECORDS = metrics.counter(
    "prediction_records_total", "Answered requests by what became of their record", ["state"]
)  # stored, failed (the transaction failed), dropped (the queue was full)
_STOP = object()


def as_time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def record_rows(event: PredictionEvent) -> tuple[dict, dict]:
    """The event as its prediction_log row and its outlier_log row."""
    extra = event.answer.extra
    created = as_time(event.time)
    flags = [bool(flag) for flag in extra["is_outlier"]]
    prediction = {
        "log_id": event.request_id,
        "log": {
            "endpoint": event.endpoint,
            "model": event.answer.model,
            "model_version": event.model_version,
            "data": event.input,
            "prediction": np.asarray(event.answer.scores).tolist(),
            "elapsed_ms": round(event.seconds * 1000, 3),
        },
        "rows": len(event.input),
        "created_datetime": created,
    }
    outlier = {
        "log_id": event.request_id,
        "log": {
            "outlier_model": event.outlier_model,
            "data": event.input,
            "is_outlier": flags,
            "outlier_score": np.asarray(extra["outlier_score"], dtype=float).tolist(),
        },
        "outliers": sum(flags),
        "rows": len(flags),
        "created_datetime": created,
    }
    return prediction, outlier


class RecordWriter:
    def __init__(self, engine: Engine, queue_size: int = 10_000):
        self.engine = engine
        self.queue: queue.Queue = queue.Queue(queue_size)
        self.thread = threading.Thread(target=self._run, name="record-writer", daemon=True)

    def start(self) -> "RecordWriter":
        self.thread.start()
        return self

    def put(self, event: PredictionEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            RECORDS.labels("dropped").inc()
            logger.error("record queue full: request %s not stored", event.request_id)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self.queue.put(_STOP)
        self.thread.join()

    def _run(self) -> None:
        while (event := self.queue.get()) is not _STOP:
            self.write(event)

    def write(self, event: PredictionEvent) -> bool:
        prediction, outlier = record_rows(event)
        try:
            with self.engine.begin() as connection:  # one transaction: both rows, or neither
                connection.execute(insert(prediction_log).values(prediction))
                connection.execute(insert(outlier_log).values(outlier))
        except Exception as error:  # noqa: BLE001 - the writer must outlive any one failed record
            RECORDS.labels("failed").inc()
            logger.error("request %s not stored: %s", event.request_id, str(error).splitlines()[0])
            return False
        RECORDS.labels("stored").inc()
        return True


def window_source(engine: Engine):
    """The monitor's source: the rows and outlier flags of the records answered in [start, end)."""

    def source(start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        begin, stop = as_time(start), as_time(end)
        with engine.connect() as connection:
            data = connection.execute(
                select(prediction_log.c.log["data"]).where(
                    and_(prediction_log.c.created_datetime >= begin, prediction_log.c.created_datetime < stop)
                )
            ).scalars()
            rows = [row for request in data for row in request]
            flags = connection.execute(
                select(outlier_log.c.log["is_outlier"]).where(
                    and_(outlier_log.c.created_datetime >= begin, outlier_log.c.created_datetime < stop)
                )
            ).scalars()
            outliers = [flag for request in flags for flag in request]
        return np.asarray(rows, dtype=np.float64).reshape(-1, 4), np.asarray(outliers, dtype=bool)

    return source


def save_alerts(engine: Engine, found: list[Alert]) -> None:
    if not found:
        return
    with engine.begin() as connection:
        connection.execute(
            insert(alerts),
            [
                {
                    "check": alert.check,
                    "feature": alert.feature,
                    "value": alert.value,
                    "threshold": alert.threshold,
                    "window_start": as_time(alert.window_start),
                    "window_end": as_time(alert.window_end),
                    "rows": alert.rows,
                    "message": alert.message(),
                }
                for alert in found
            ],
        )


def list_alerts(engine: Engine, limit: int, since: datetime | None = None) -> list[dict]:
    query = select(alerts).order_by(alerts.c.alert_id.desc()).limit(limit)
    if since is not None:
        query = query.where(alerts.c.window_end >= since)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def alert_counts(engine: Engine) -> list[tuple[str, str, int]]:
    feature = func.coalesce(alerts.c.feature, "")
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                select(alerts.c.check, feature, func.count()).group_by(alerts.c.check, feature)
            )
        ]
