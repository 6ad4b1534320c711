"""Small SQLAlchemy helpers for the patterns that keep state in a SQL database (PostgreSQL through psycopg2).

An engine is made from a URL when a process starts (in each gunicorn worker, after the fork), never at import.
A pattern's settings inherit `DatabaseSettings` (DATABASE_URL and the timeouts), and its processes call

    engine = settings.engine()                                  # an API worker, a job, a seeder
    migrate(Path(__file__).with_name("alembic.ini"), settings)  # its one-shot `migrate` command

A database that is down answers at once (connection refused: a 503 in every service). A database that hangs (a
stopped server, a lost network path) answers nothing, and libpq would wait for it forever, whatever
statement_timeout says: that timer runs in the server. So every wait of psycopg2 on the network goes through
`_wait_with_deadline` (psycopg2's documented wait callback), which gives up after the engine's `timeout` with an
error that SQLAlchemy counts as a lost connection: the connection is dropped, not returned to the pool, and the
request gets its 503 within the timeout.
"""

import logging
import selectors
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import URL, Engine, MetaData, create_engine, func, make_url, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from mlpatterns.logging import configure_logging

logger = logging.getLogger(__name__)


def _wait_with_deadline(connection) -> None:
    """psycopg2's wait callback (as psycopg2.extras.wait_select), with a deadline for connections that have one."""
    timeout = getattr(connection, "wait_timeout", None)
    deadline = None if timeout is None else time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        while True:
            state = connection.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            if state == psycopg2.extensions.POLL_READ:
                events = selectors.EVENT_READ
            elif state == psycopg2.extensions.POLL_WRITE:
                events = selectors.EVENT_WRITE
            else:
                raise psycopg2.OperationalError(f"unexpected state from poll: {state}")
            selector.register(connection.fileno(), events)
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = selector.select(remaining)
            selector.unregister(connection.fileno())
            if not ready:
                # Worded as libpq words a lost connection, so that SQLAlchemy drops it instead of pooling it.
                raise psycopg2.OperationalError(f"could not receive data from server: no answer within {timeout:g} s")


def create_db_engine(url: str | URL, timeout: float | None = None, **options) -> Engine:
    """An engine that checks a pooled connection before lending it (a restarted database is noticed, not a 500).

    With `timeout` (seconds), no connect, statement or wait for a pooled connection takes longer: the server
    cancels a statement that runs past it (statement_timeout), and the client stops waiting for a server that
    does not answer at all. Without it (migrations, which may wait on a lock), waits are unbounded."""
    psycopg2.extensions.set_wait_callback(_wait_with_deadline)  # process-wide; bounded only where a timeout is set
    connect_args = dict(options.pop("connect_args", {}))
    if timeout is not None:
        # A class attribute, not an instance one: the connection already waits on the server in its constructor.
        timed_connection = type("TimedConnection", (psycopg2.extensions.connection,), {"wait_timeout": timeout})
        connect_args.update(
            connection_factory=timed_connection,
            options=f"-c statement_timeout={int(timeout * 1000)}",
        )
        options.setdefault("pool_timeout", timeout)
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **options)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose rows stay readable after commit, so a route can commit and then answer with them."""
    return sessionmaker(engine, expire_on_commit=False)


def wait_for_database(engine: Engine, timeout: float = 30.0) -> None:
    """Block until the database accepts a query; raise its last error after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return
        except OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def run_migrations(metadata: MetaData, url: str | URL, lock_name: bytes) -> None:
    """The body of a pattern's Alembic `migrations/env.py`: run the migrations against `url`, online only.

    Several migrators may start at once (an initContainer in each replica): each first takes the PostgreSQL
    advisory lock named by `lock_name` (up to 8 bytes, unique among the database's users), held until its
    transaction commits, so one applies the migrations and the others, let in after it, find nothing to do."""
    from alembic import context

    if context.is_offline_mode():
        raise SystemExit("offline (--sql) mode is not supported: migrations run against a live database")
    engine = create_db_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=metadata, compare_type=True)
            with context.begin_transaction():
                connection.execute(select(func.pg_advisory_xact_lock(int.from_bytes(lock_name, "big"))))
                context.run_migrations()
    finally:
        engine.dispose()


def upgrade_to_head(alembic_ini: Path, url: str | URL, wait_seconds: float = 30.0) -> str | None:
    """What a one-shot `migrate` process does: wait for the database, bring its schema to the newest revision
    of `alembic_ini`'s migrations, and return the revision it is at."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    engine = create_db_engine(url)
    try:
        wait_for_database(engine, timeout=wait_seconds)
        command.upgrade(Config(alembic_ini), "head")
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


class DatabaseSettings(BaseSettings):
    """Where a pattern's database is and how long anything may wait on it. A subclass gives DATABASE_URL its
    default (or builds `url` from other variables, as model_db does from the original's POSTGRES_*)."""

    model_config = SettingsConfigDict(extra="ignore", protected_namespaces=(), frozen=True)

    database_url: str | None = Field(
        None, description="A SQLAlchemy URL, e.g. postgresql+psycopg2://user:password@postgres:5432/name."
    )
    db_pool_size: int = Field(
        5,
        gt=0,
        description="Connections per process; keep processes x replicas x this under the server's max_connections "
        "(100 by default).",
    )
    db_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="No connect, statement or wait for a pooled connection takes longer: a database that is down or "
        "hung is a 503 (or a failed run) within this time.",
    )
    db_wait_seconds: float = Field(30.0, ge=0, description="How long a process waits for the database at its start.")
    log_level: str = "INFO"
    log_json: bool = Field(False, description="Log one JSON object per line instead of plain text.")

    @property
    def url(self) -> URL:
        if not self.database_url:
            raise ValueError("DATABASE_URL is not set")
        return make_url(self.database_url)

    def engine(self, **options) -> Engine:
        """An engine with these timeouts and a pool of `db_pool_size` (no overflow: the bound is the bound)."""
        options = {"pool_size": self.db_pool_size, "max_overflow": 0, **options}
        return create_db_engine(self.url, timeout=self.db_timeout_seconds, **options)


def migrate(alembic_ini: Path, settings: DatabaseSettings) -> str | None:
    """The body of a pattern's `migrate` command: log as its services do, wait for the database, upgrade to the
    newest revision and say which it is (the URL is logged with its password hidden)."""
    configure_logging(settings.log_level, settings.log_json)
    revision = upgrade_to_head(alembic_ini, settings.url, settings.db_wait_seconds)
    logger.info("database %s is at revision %s", settings.url.render_as_string(), revision)
    return revision
