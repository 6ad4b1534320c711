"""Alembic's entry point: the batch pattern's migrations, against the database named by DATABASE_URL."""

from chapter4_serving_patterns.batch_pattern.settings import BatchDatabaseSettings
from chapter4_serving_patterns.batch_pattern.tables import metadata
from mlpatterns.db import run_migrations

run_migrations(metadata, BatchDatabaseSettings().url, lock_name=b"batch")
