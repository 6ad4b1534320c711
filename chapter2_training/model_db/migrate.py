"""`python -m chapter2_training.model_db.migrate`: bring the schema to the newest revision, then exit.

Runs once before the API (compose: a one-shot service the API waits for; Kubernetes: an initContainer), never
in the API's workers. Running it again is a no-op; several at once are serialised by a lock (see env.py).
"""

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from chapter2_training.model_db.settings import ModelDbSettings
from mlpatterns.db import create_db_engine, wait_for_database
from mlpatterns.logging import configure_logging

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
logger = logging.getLogger(__name__)


def main() -> None:
    settings = ModelDbSettings()
    configure_logging(settings.log_level, settings.log_json)
    engine = create_db_engine(settings.url)
    try:
        wait_for_database(engine, timeout=settings.db_wait_seconds)
        command.upgrade(Config(ALEMBIC_INI), "head")
        with engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
        logger.info("database %s is at revision %s", settings.url.render_as_string(), revision)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
