"""Settings of the batch pattern's processes (the API, the job, the seeder, the migration), read from the
environment when a process starts. All of them reach the same database through DATABASE_URL."""

from pathlib import Path

from pydantic import Field

from mlpatterns.db import DatabaseSettings
from mlpatterns.settings import HttpServiceSettings, ModelPath

DEFAULT_DATABASE_URL = "postgresql+psycopg2://batch:batch@127.0.0.1:5432/batch"


class BatchDatabaseSettings(DatabaseSettings):
    """Where the items table lives (the core's DatabaseSettings: timeouts, pool, wait at start)."""

    database_url: str = Field(DEFAULT_DATABASE_URL, description="A SQLAlchemy URL of the PostgreSQL database.")
    db_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="No connect, statement or wait for a pooled connection takes longer; a database that is down "
        "or hung is a 503 (API) or a failed run (job) within this time.",
    )


class ApiSettings(BatchDatabaseSettings, HttpServiceSettings):
    """The read-only API."""


class JobSettings(BatchDatabaseSettings):
    """The batch job: which model, how many rows per transaction, when to run."""

    model_path: ModelPath = Path("models/iris_svc/model.onnx")
    label_path: Path | None = Field(None, description="Class index -> label; default: labels.json beside the model.")
    chunk_size: int = Field(
        1000,
        gt=0,
        le=10_000,
        description="Rows taken, predicted in one onnxruntime call, and written back per transaction.",
    )
    start_delay_seconds: float = Field(
        0.0, ge=0, description="Wait this long after starting before the first run (the original waited 60 s)."
    )
    interval_seconds: float = Field(60.0, gt=0, description="Between the end of one run and the start of the next.")
    job_name: str | None = Field(None, description="This process's name in the runs table (default: host-pid).")
    heartbeat_path: Path | None = Field(
        None,
        description="A file touched once the job is ready, at least every HEARTBEAT_SECONDS while it waits, and "
        "after every chunk: a port-less process's liveness for a healthcheck or an exec probe (none if unset).",
    )
    heartbeat_seconds: float = Field(10.0, gt=0, description="The longest wait between two touches of the heartbeat.")

    @property
    def resolved_label_path(self) -> Path:
        return self.label_path or self.model_path.with_name("labels.json")


class SeedSettings(BatchDatabaseSettings):
    """The seeder: how many rows the table should hold (made from the 150 real iris rows, see seed.py)."""

    seed_rows: int = Field(150, ge=0, le=10_000_000, description="Seeded rows wanted in the table.")
