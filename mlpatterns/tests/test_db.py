"""mlpatterns.db's migration helpers against a real PostgreSQL: a pattern's Alembic env.py calls run_migrations,
its one-shot `migrate` calls upgrade_to_head."""

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
from sqlalchemy.exc import OperationalError

from mlpatterns.db import DatabaseSettings, migrate, upgrade_to_head
from mlpatterns.runner.backing import PostgresServer, free_port
from mlpatterns.runner.run import REPO_ROOT

ENV_PY = """
import os
from sqlalchemy import Column, Integer, MetaData, Table
from mlpatterns.db import run_migrations

metadata = MetaData()
Table("toys", metadata, Column("id", Integer, primary_key=True))
run_migrations(metadata, os.environ["TOY_DATABASE_URL"], lock_name=b"toys")
"""
REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.execute("SELECT pg_sleep(2)")  # long enough for the migrators started at once to overlap
    op.create_table("toys", sa.Column("id", sa.Integer(), primary_key=True))
"""


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer(free_port()).start()
    try:
        server.create_database("toy", "toy", "toy")
        yield f"postgresql+psycopg2://toy:toy@127.0.0.1:{server.port}/toy"
    finally:
        server.stop()


@pytest.fixture
def alembic_ini(tmp_path, postgres, monkeypatch):
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(ENV_PY)
    (tmp_path / "migrations" / "versions" / "0001_toys.py").write_text(REVISION)
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    monkeypatch.setenv("TOY_DATABASE_URL", postgres)
    yield tmp_path / "alembic.ini"
    with psycopg2.connect(postgres.replace("+psycopg2", "")) as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS toys, alembic_version")
    connection.close()


def tables(url: str) -> list[str]:
    with psycopg2.connect(url.replace("+psycopg2", "")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        names = [row[0] for row in cursor.fetchall()]
    connection.close()
    return names


def test_upgrade_to_head_migrates_once_and_says_the_revision(alembic_ini, postgres):
    assert upgrade_to_head(alembic_ini, postgres, wait_seconds=5) == "0001"
    assert tables(postgres) == ["alembic_version", "toys"]
    assert upgrade_to_head(alembic_ini, postgres, wait_seconds=5) == "0001"  # again: nothing to do, no error


def test_migrators_started_at_once_take_turns(alembic_ini, postgres):
    """Without the advisory lock, all would create the table and all but one would fail on it."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        from mlpatterns.db import upgrade_to_head
        print(upgrade_to_head(Path({str(alembic_ini)!r}), {postgres!r}, wait_seconds=5))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))

    def migrate(_) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(migrate, range(4)))
    for result in results:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "0001"
    assert tables(postgres) == ["alembic_version", "toys"]


def test_upgrade_to_head_gives_up_on_a_database_that_is_not_there(alembic_ini):
    with pytest.raises(OperationalError):
        upgrade_to_head(alembic_ini, f"postgresql+psycopg2://toy:toy@127.0.0.1:{free_port()}/toy", wait_seconds=1)


def test_database_settings_give_an_engine_with_their_pool_and_timeout_and_migrate_logs_no_password(
    alembic_ini, postgres, monkeypatch, caplog
):
    monkeypatch.setenv("DATABASE_URL", postgres)
    monkeypatch.setenv("DB_POOL_SIZE", "2")
    monkeypatch.setenv("DB_TIMEOUT_SECONDS", "1.5")
    settings = DatabaseSettings()
    engine = settings.engine()
    try:
        assert engine.pool.size() == 2 and engine.pool._max_overflow == 0
        assert engine.pool._timeout == 1.5  # waiting for a pooled connection is bounded too
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "1500ms"
    finally:
        engine.dispose()
    with caplog.at_level("INFO", logger="mlpatterns.db"):
        assert migrate(alembic_ini, settings) == "0001"
    assert "toy:***@127.0.0.1" in caplog.text and "toy:toy@" not in caplog.text  # the password is hidden
    assert "is at revision 0001" in caplog.text
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(ValueError, match="DATABASE_URL is not set"):
        DatabaseSettings().engine()
