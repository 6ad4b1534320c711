"""`python -m chapter4_serving_patterns.batch_pattern.migrate`: bring the schema to the newest revision, then exit.

Runs once before the API and the job (compose: a one-shot service they wait for; Kubernetes: an initContainer).
Running it again is a no-op; several at once are serialised by a lock (mlpatterns.db.run_migrations).
"""

from pathlib import Path

from chapter4_serving_patterns.batch_pattern.settings import BatchDatabaseSettings
from mlpatterns.db import migrate

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def main() -> None:
    migrate(ALEMBIC_INI, BatchDatabaseSettings())


if __name__ == "__main__":
    main()
