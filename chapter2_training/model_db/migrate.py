"""`python -m chapter2_training.model_db.migrate`: bring the schema to the newest revision, then exit.

Runs once before the API (compose: a one-shot service the API waits for; Kubernetes: an initContainer), never
in the API's workers. Running it again is a no-op; several at once are serialised by a lock
(mlpatterns.db.run_migrations).
"""

from pathlib import Path

from chapter2_training.model_db.settings import ModelDbSettings
from mlpatterns.db import migrate

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def main() -> None:
    migrate(ALEMBIC_INI, ModelDbSettings())


if __name__ == "__main__":
    main()
