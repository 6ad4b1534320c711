"""Alembic's entry point: run the migrations against the database named by the service's settings.

Several migrators may start at once (an initContainer in each replica): each takes one PostgreSQL advisory
lock first, so one applies the migrations and the others, let in after it commits, find nothing to do
(mlpatterns.db.run_migrations).
"""

from chapter2_training.model_db.settings import ModelDbSettings
from chapter2_training.model_db.tables import Base
from mlpatterns.db import run_migrations

run_migrations(Base.metadata, ModelDbSettings().url, lock_name=b"model_db")
