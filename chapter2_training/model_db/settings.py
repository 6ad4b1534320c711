"""Settings of the model management service, read from the environment when a process starts."""

from pydantic import Field
from sqlalchemy import URL, make_url

from mlpatterns.db import DatabaseSettings
from mlpatterns.settings import HttpServiceSettings


class ModelDbSettings(DatabaseSettings, HttpServiceSettings):
    """`DATABASE_URL` names the database; without it, the original sample's `POSTGRES_*` variables do."""

    postgres_user: str = Field("model_db", description="Used only when DATABASE_URL is not set (as the next four).")
    postgres_password: str = "model_db"
    postgres_server: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_db: str = "model_db"
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
