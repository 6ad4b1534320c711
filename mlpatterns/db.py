"""Small SQLAlchemy helpers for the patterns that keep state in a SQL database.

An engine is made from a URL when a process starts (in each gunicorn worker, after the fork), never at import.
"""

import time

from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker


def create_db_engine(url: str | URL, **options) -> Engine:
    """An engine that checks a pooled connection before lending it (a restarted database is noticed, not a 500)."""
    return create_engine(url, pool_pre_ping=True, **options)


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
