"""Small SQLAlchemy helpers for the patterns that keep state in a SQL database (PostgreSQL through psycopg2).

An engine is made from a URL when a process starts (in each gunicorn worker, after the fork), never at import.

A database that is down answers at once (connection refused: a 503 in every service). A database that hangs (a
stopped server, a lost network path) answers nothing, and libpq would wait for it forever, whatever
statement_timeout says: that timer runs in the server. So every wait of psycopg2 on the network goes through
`_wait_with_deadline` (psycopg2's documented wait callback), which gives up after the engine's `timeout` with an
error that SQLAlchemy counts as a lost connection: the connection is dropped, not returned to the pool, and the
request gets its 503 within the timeout.
"""

import selectors
import time

import psycopg2
import psycopg2.extensions
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker


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
