"""`python -m chapter4_serving_patterns.batch_pattern.migrate`: bring the schema to the newest revision, then exit.

Runs once before the API and the job (compose: a one-shot service they wait for; Kubernetes: an initContainer).
Running it again is a no-op; several at once are serialised by a lock (mlpatterns.db.run_migrations).
"""

import logging
from pathlib import Path

from chapter4_serving_patterns.batch_pattern.settings import DatabaseSettings
from mlpatterns.db import upgrade_to_head
from mlpatterns.logging import configure_logging

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
logger = logging.getLogger(__name__)


def main() -> None:
    settings = DatabaseSettings()
    configure_logging(settings.log_level, settings.log_json)
    revision = upgrade_to_head(ALEMBIC_INI, settings.database_url, settings.db_wait_seconds)
    logger.info("the batch pattern's tables are at revision %s", revision)


if __name__ == "__main__":
    main()
