"""`python -m chapter5_operations.prediction_monitoring_pattern.migrate`: bring the schema to the newest revision.

Runs once before the API and the monitor (compose: a one-shot service they wait for; Kubernetes: an
initContainer). Running it again is a no-op; several at once are serialised by a lock.
"""

from pathlib import Path

from chapter5_operations.prediction_monitoring_pattern.settings import MonitorDatabaseSettings
from mlpatterns.db import migrate


def main() -> None:
    migrate(Path(__file__).with_name("alembic.ini"), MonitorDatabaseSettings())


if __name__ == "__main__":
    main()
