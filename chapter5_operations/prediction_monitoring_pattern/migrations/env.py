"""Alembic's entry point: the prediction monitoring pattern's migrations, against DATABASE_URL."""

from chapter5_operations.prediction_monitoring_pattern.settings import MonitorDatabaseSettings
from chapter5_operations.prediction_monitoring_pattern.tables import metadata
from mlpatterns.db import run_migrations

run_migrations(metadata, MonitorDatabaseSettings().url, lock_name=b"monitor")
