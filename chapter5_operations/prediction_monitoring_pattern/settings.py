"""Settings of the prediction monitoring pattern's processes (the API, the monitor, the load job, the migration),
read from the environment when a process starts. The API and the monitor reach one database by DATABASE_URL."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlpatterns.db import DatabaseSettings
from mlpatterns.drift import Thresholds
from mlpatterns.outlier import OutlierServingSettings

DEFAULT_DATABASE_URL = "postgresql+psycopg2://monitor:monitor@127.0.0.1:5432/monitor"
REFERENCE_PATH = Path(__file__).with_name("reference.json")


class MonitorDatabaseSettings(DatabaseSettings):
    database_url: str = Field(DEFAULT_DATABASE_URL, description="A SQLAlchemy URL of the PostgreSQL database.")


class CheckSettings(BaseSettings):
    """The training reference and the thresholds: the monitor checks with them, the API's page draws them."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    reference_path: Path = Field(REFERENCE_PATH, description="The training reference (reference.py writes it).")
    mean_threshold: float = Field(0.05, gt=0, description="|window mean / training mean - 1| above this alerts.")
    psi_threshold: float = Field(0.2, gt=0, description="A feature's PSI above this alerts.")
    outlier_threshold: float = Field(0.2, gt=0, le=1, description="An outlier share above this alerts.")
    min_rows: int = Field(30, gt=0, description="A window with fewer records is not judged.")

    def thresholds(self) -> Thresholds:
        return Thresholds(self.mean_threshold, self.psi_threshold, self.outlier_threshold, self.min_rows)


class ApiSettings(OutlierServingSettings, CheckSettings, MonitorDatabaseSettings):
    """The iris API with outlier scores, storing every answered request (prediction_log + outlier_log)."""

    store_records: bool = Field(
        True, description="Store every answered POST; off serves the same API storing nothing (bench.py compares)."
    )
    record_queue_size: int = Field(
        10_000,
        gt=0,
        description="Answered requests waiting for their transaction, per worker; past this a record is dropped "
        '(counted in prediction_records_total{state="dropped"}, logged) rather than the request slowed.',
    )


class MonitorSettings(CheckSettings, MonitorDatabaseSettings):
    """The monitor: every INTERVAL_SECONDS, the last WINDOW_SECONDS of records against the training reference."""

    interval_seconds: float = Field(60.0, gt=0, description="Between two checks (the original: 1 minute).")
    window_seconds: float = Field(
        120.0, gt=0, description="The sliding window checked, ending now (the original: interval + 1 minute)."
    )
    heartbeat_path: Path | None = Field(
        None, description="A file touched after every check and every 10 s between checks (liveness)."
    )


class LoadSettings(BaseSettings):
    """The load job: a generated iris stream with drift windows planted at known blocks, sent to the API."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    target_url: str = Field("http://127.0.0.1:8000/predict", description="Where each row is POSTed.")
    rate_per_second: float = Field(10.0, ge=0, description="Rows sent per second (0: as fast as answered).")
    block_rows: int = Field(300, gt=0, description="Rows per block of the stream (a multiple of 150: balanced).")
    blocks: int = Field(10, gt=0, description="Blocks in the stream.")
    drift_plan: str = Field(
        "2:all*1.10,5:outliers=0.4,7:petal_length*0.92+petal_width*0.92",
        description="Planted drift: block:change,... (feature*factor, all*factor, outliers=share).",
    )
    seed: int = Field(20261201, description="The stream's seed: the same seed sends the same rows.")
    repeat: bool = Field(False, description="Start the stream again at its end (a demo that runs until stopped).")
    start_delay_seconds: float = Field(0.0, ge=0, description="Wait before the first row.")
    api_wait_seconds: float = Field(120.0, ge=0, description="How long to wait for the API's /health at start.")
    heartbeat_path: Path | None = Field(
        None, description="A file touched after every row sent: `python -m mlpatterns.healthcheck heartbeat`."
    )
    log_level: str = "INFO"
    log_json: bool = False
