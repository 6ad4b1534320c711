"""The prediction log: one JSON line per answered request, written off the request's path, to stdout and a file.

    log = PredictionLog.from_settings(PredictionLogSettings())
    log.start()                     # in the worker (the app's lifespan): starts the writer thread
    log.put(event)                  # on the request's path: onto a bounded queue, nothing else
    log.close()                     # at shutdown: every queued record written, then the thread ends

Why each part is as it is:
- A bounded queue and one writer thread per worker process: a request never waits for a disk or a pipe. Every
  `flush_seconds` (0.1 s) the writer takes whatever is queued and writes it as one batch: serialising and the
  system calls cost the thread, not the request, and a request's put wakes no thread.
- Full queue (the writer cannot keep up, or the disk stalls): the request waits up to `max_wait_seconds` for
  room, then the record is dropped, counted in `prediction_log_records_total{outcome="dropped"}` and warned
  about (at most once a second). Under normal load nothing is dropped: the queue holds `queue_size` records
  and the writer empties it in milliseconds; a full queue is the stated, counted exception, not a stalled API.
- One file for every worker, appended with O_APPEND, each batch of whole lines written under an exclusive
  `flock`. O_APPEND alone puts every write() at the end, but POSIX promises nothing about two processes'
  writes of more than PIPE_BUF bytes, and a short write (a full disk, a signal) leaves the rest for a second
  call, between which another worker's line could land. The lock makes a batch one unit whatever its length
  (held through retries, so a line's rest follows its start), at one lock per batch, in the writer thread.
  (A file per worker would need no lock, but every restart makes a new file the shipper must find and someone
  must clean up.)
- Rotation: before a batch would take the file past `max_bytes`, the writer holding the lock renames it to
  `<path>.1` (replacing the last) and opens a new one; every writer checks, under the lock, that its open file is
  still the one at the path, and follows another's rotation. The shipper tails `<path>*` by inode.
- stdout gets the same lines, in writes of whole lines of at most PIPE_BUF (4 KiB): a pipe keeps such writes
  whole, so other processes' log lines cannot land inside a record there (a record longer than that may be
  split on stdout; the file is the record of truth).
- Shutdown: `close()` (the app lifespan's end, which uvicorn runs when gunicorn stops a worker gracefully)
  writes everything still queued before the worker exits. A write that fails (a full disk) is retried once a
  second; records still unwritten when `close()`'s time is up are counted `failed`.
"""

import fcntl
import logging
import os
import queue
import select
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlpatterns import metrics

logger = logging.getLogger(__name__)

RECORDS = metrics.counter(
    "prediction_log_records_total", "Prediction records by outcome: written, dropped (queue full), failed", ["outcome"]
)
Record = dict | Any  # a dict, or an object with a `record()` method that returns one
MAX_BATCH = 1000  # records per write
_JSON_LINE = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


class PredictionLogSettings(BaseSettings):
    """The prediction log's settings; a service's settings class inherits them beside its own."""

    model_config = SettingsConfigDict(extra="ignore", protected_namespaces=(), frozen=True)

    prediction_log: bool = Field(True, description="Write a record per prediction (on/off).")
    log_path: Path | None = Field(
        None, description="The JSON-lines file every worker appends to (the shipper tails it); none: stdout only."
    )
    prediction_log_stdout: bool = Field(True, description="Write every record to stdout as well.")
    prediction_log_queue_size: int = Field(10_000, gt=0, description="Records waiting for the writer, at most.")
    prediction_log_max_wait_seconds: float = Field(
        0.1, ge=0, description="How long a request waits for room in a full queue before its record is dropped."
    )
    prediction_log_flush_seconds: float = Field(
        0.1, gt=0, description="The writer writes what is queued every this many seconds (and at shutdown)."
    )
    prediction_log_max_bytes: int = Field(
        100 * 1024**2,
        ge=0,
        description="Past this size the file is renamed to LOG_PATH.1 (replacing the one before) and a new one "
        "begun; 0: never rotated.",
    )
    prediction_log_close_seconds: float = Field(
        5.0, gt=0, description="At shutdown, how long the writer may take to write what is queued."
    )


class PredictionLog:
    """The queue and its writer thread (module docstring). `put` is safe from any thread or event loop."""

    def __init__(
        self,
        path: Path | None,
        *,
        stdout: bool = True,
        queue_size: int = 10_000,
        max_wait_seconds: float = 0.1,
        flush_seconds: float = 0.1,
        max_bytes: int = 0,
        close_seconds: float = 5.0,
    ):
        self.path = Path(path) if path else None
        self.rotated = self.path.with_name(self.path.name + ".1") if self.path else None
        self.max_bytes = max_bytes
        self.stdout = stdout
        self.max_wait = max_wait_seconds
        self.flush_seconds = flush_seconds
        self.close_seconds = close_seconds
        self.queue: queue.Queue = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._fd: int | None = None
        self._last_warning = 0.0
        self._deadline: float | None = None  # set by close(): retries end then
        # Children made once: labels() costs as much as an increment.
        self._written, self._dropped, self._failed = (RECORDS.labels(o) for o in ("written", "dropped", "failed"))

    @classmethod
    def from_settings(cls, settings: PredictionLogSettings) -> "PredictionLog":
        return cls(
            settings.log_path,
            stdout=settings.prediction_log_stdout,
            queue_size=settings.prediction_log_queue_size,
            max_wait_seconds=settings.prediction_log_max_wait_seconds,
            flush_seconds=settings.prediction_log_flush_seconds,
            max_bytes=settings.prediction_log_max_bytes,
            close_seconds=settings.prediction_log_close_seconds,
        )

    # -- the request's side ----------------------------------------------------------------------------
    def put(self, record: Record) -> bool:
        """Queue one record (a dict, or an object whose `record()` gives one: it is called in the writer thread);
        False if it was dropped because the queue stayed full (counted and warned)."""
        try:
            if self.max_wait:
                self.queue.put(record, timeout=self.max_wait)
            else:
                self.queue.put_nowait(record)
            return True
        except queue.Full:
            self._dropped.inc()
            now = time.monotonic()
            if now - self._last_warning >= 1.0:
                self._last_warning = now
                logger.warning(
                    "prediction log queue full (%d records): a record was dropped (prediction_log_records_total"
                    '{outcome="dropped"} counts them)',
                    self.queue.maxsize,
                )
            return False

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> "PredictionLog":
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Write every queued record (within `close_seconds`), then stop the writer and close the file."""
        if self._thread is None:
            return
        self._deadline = time.monotonic() + self.close_seconds
        self._stop.set()
        self._thread.join(self.close_seconds + 1.0)
        if self._thread.is_alive():  # stuck in a write: its file descriptor must stay open under it
            logger.error("prediction log: the writer did not finish within %.0f s", self.close_seconds)
            return
        self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @asynccontextmanager
    async def lifespan(self, app) -> AsyncIterator[None]:
        """For `create_service_app(..., lifespan=log.lifespan)`: started with the worker, flushed at its end."""
        self.start()
        try:
            yield
        finally:
            self.close()

    # -- the writer thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        # Wakes every flush_seconds, not on every record: a request's put then wakes no thread (a wake-up per
        # record cost more CPU than the write), and each write carries what a whole interval gathered.
        while True:
            stopping = self._stop.wait(self.flush_seconds)
            try:
                self._drain()
            except Exception:  # a writer that died would leave every later record to be dropped, unseen
                logger.exception("prediction log: the writer failed; it carries on")
            if stopping:
                return

    def _drain(self) -> None:
        while True:
            batch = []
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            if len(batch) < MAX_BATCH:
                return

    def _write(self, batch: list[Record]) -> None:
        lines = []
        for record in batch:
            try:
                lines.append(orjson.dumps(_as_dict(record), option=_JSON_LINE))
            except Exception as error:  # a value JSON cannot carry, a failing record(): that record only
                self._failed.inc()
                logger.error("prediction log: a record could not be made JSON (%r); it is not written", error)
        if self._fd is not None and not self._append(b"".join(lines)):
            self._failed.inc(len(lines))
            logger.error("prediction log: %d records could not be written to %s", len(lines), self.path)
            return
        if self.stdout:
            for chunk in _whole_lines_up_to(select.PIPE_BUF, lines):
                _write_all(1, chunk)
        self._written.inc(len(lines))

    def _append(self, data: bytes) -> bool:
        """Append whole lines under the lock, to the file at the path (rotated first if it is full). A failed write
        (a full disk) is retried every second with the lock held, so that the rest of a line follows its start;
        False once close()'s time is up."""
        view = memoryview(data)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._current(len(data))
            while view:
                try:
                    view = view[os.write(self._fd, view) :]
                except OSError as error:
                    if self._deadline is not None and time.monotonic() > self._deadline:
                        return False
                    logger.error("prediction log: writing to %s failed, retrying in 1 s: %s", self.path, error)
                    time.sleep(1.0)
            return True
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _current(self, size: int) -> None:
        """With the lock held: make sure the open file is the one at the path, rotating it when `size` more bytes
        would take it past max_bytes. Another worker's rotation is followed: its renamed file is no longer ours."""
        while True:
            try:
                at_path = os.stat(self.path).st_ino
            except FileNotFoundError:
                at_path = None  # removed: a new file is made at the path
            mine = os.fstat(self._fd)
            if at_path != mine.st_ino:
                self._reopen()
            elif self.max_bytes and mine.st_size and mine.st_size + size > self.max_bytes:
                os.replace(self.path, self.rotated)  # the lock is held: no worker writes to it meanwhile
                logger.info("prediction log: %s rotated to %s", self.path, self.rotated)
                self._reopen()
            else:
                return

    def _reopen(self) -> None:
        """Open the file at the path and take its lock before the old one's is released (so the lock is never
        let go of in between)."""
        new = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(new, fcntl.LOCK_EX)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = new


def _whole_lines_up_to(limit: int, lines: list[bytes]) -> Iterator[bytes]:
    """The lines joined into chunks of at most `limit` bytes (a longer line alone), never splitting one."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) > limit:
            yield b"".join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        yield b"".join(chunk)


def _as_dict(record: Record) -> dict:
    return record if isinstance(record, dict) else record.record()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
