"""Settings of the model management service, read from the environment when a process starts."""

from pydantic import Field
from sqlalchemy import URL, make_url

from mlpatterns.settings import HttpServiceSettings


class ModelDbSettings(HttpServiceSettings):
    """`DATABASE_URL` names the database; without it, the original sample's `POSTGRES_*` variables do."""

    database_url: str | None = Field(
        None, description="A full SQLAlchemy URL, e.g. postgresql+psycopg2://model_db:model_db@postgres:5432/model_db."
    )
    postgres_user: str = Field("model_db", description="Used only when DATABASE_URL is not set (as the next four).")
    postgres_password: str = "model_db"
    postgres_server: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_db: str = "model_db"
    db_pool_size: int = Field(
        5,
        gt=0,
        description="Connections per worker process; keep workers x replicas x this"
        " under the server's max_connections (100 by default).",
    )
    db_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="No request waits longer on the database: for a connection, a statement, or a free pooled "
        "connection; a database that is down or hung is a 503 within this time.",
    )
    db_wait_seconds: float = Field(30.0, ge=0, description="How long `migrate` waits for the database to accept.")
    api_title: str = "Model_DB_Service"
    api_description: str = "machine learning system training patterns"
    api_version: str = Field("0.1", description="Also the health route's prefix: /v{API_VERSION}/health.")

    @property
    def url(self) -> URL:
        if self.database_url:
            return make_url(self.database_url)
        return URL.create(
            "postgresql+psycopg2",
            username=self.postgres_user,
            password=self.postgres_password,
            host=self.postgres_server,
            port=self.postgres_port,
            database=self.postgres_db,
        )
