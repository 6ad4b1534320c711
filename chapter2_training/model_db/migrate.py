"""`python -m chapter2_training.model_db.migrate`: bring the schema to the newest revision, then exit.

Runs once before the API (compose: a one-shot service the API waits for; Kubernetes: an initContainer), never
in the API's workers. Running it again is a no-op; several at once are serialised by a lock
(mlpatterns.db.run_migrations).
"""

import logging
from pathlib import Path

from chapter2_training.model_db.settings import ModelDbSettings
from mlpatterns.db import upgrade_to_head
from mlpatterns.logging import configure_logging

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
logger = logging.getLogger(__name__)


def main() -> None:
    settings = ModelDbSettings()
    configure_logging(settings.log_level, settings.log_json)
    revision = upgrade_to_head(ALEMBIC_INI, settings.url, settings.db_wait_seconds)
    logger.info("database %s is at revision %s", settings.url.render_as_string(), revision)


if __name__ == "__main__":
    main()
