"""Alembic's entry point: run the migrations against the database named by the service's settings.

Several migrators may start at once (an initContainer in each replica): each takes one PostgreSQL advisory
lock first, so one applies the migrations and the others, let in after it commits, find nothing to do.
"""

from alembic import context
from sqlalchemy import func, select
from sqlalchemy.pool import NullPool

from chapter2_training.model_db.settings import ModelDbSettings
from chapter2_training.model_db.tables import Base
from mlpatterns.db import create_db_engine

MIGRATION_LOCK = int.from_bytes(b"model_db", "big")  # any bigint the other users of the database do not use


def run_migrations_online() -> None:
    engine = create_db_engine(ModelDbSettings().url, poolclass=NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
        with context.begin_transaction():
            # Held until this transaction commits; the version table is read only after it is taken.
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: migrations run against a live database")
run_migrations_online()
