"""Real Redis and PostgreSQL servers from the machine's binaries, private to one run, on free ports.

Each keeps its data and its log (`server.log`, read by `tail()`) in a temporary directory that is removed when
it stops; nothing touches a server that already runs on the machine's standard ports. Given the runner's
Watchdog, a server and its directory are also stopped and removed if the runner itself dies.
"""

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg2

from mlpatterns.runner.watchdog import Watchdog, stop_groups


class BackingError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(check, what: str, process: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BackingError(f"{what} exited with code {process.returncode}")
        if check():
            return
        time.sleep(0.05)
    raise BackingError(f"{what} did not become ready within {timeout:.0f} s")


class _Server:
    """What both servers share: a temporary directory holding the log, a process group, a stop signal."""

    stop_signal = signal.SIGTERM

    def __init__(self, port: int, watchdog: Watchdog | None = None):
        self.port = port
        self.watchdog = watchdog
        self.process: subprocess.Popen | None = None
        self.directory = ""
        self.stopped = False  # stopped on purpose: its exit is no failure

    def _make_directory(self, prefix: str) -> None:
        self.directory = tempfile.mkdtemp(prefix=prefix)
        if self.watchdog:
            self.watchdog.directory(self.directory)

    def _spawn(self, command: list[str]) -> None:
        with open(Path(self.directory, "server.log"), "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the runner, which stops us in order
            )
        if self.watchdog:
            self.watchdog.group(self.process.pid, self.stop_signal)

    def tail(self, lines: int = 20) -> list[str]:
        """The last lines of the server's log."""
        try:
            text = Path(self.directory, "server.log").read_text(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def stop(self, grace: float = 10.0) -> None:
        """Signal the server's process group, wait until it is gone (SIGKILL after `grace` s), remove the
        directory. PostgreSQL's backends lead groups of their own: its postmaster stops them before it exits."""
        if self.stopped:
            return
        self.stopped = True
        if self.process is not None:
            stop_groups({self.process.pid: self.stop_signal}, grace)
            self.process.wait()
            if self.watchdog:
                self.watchdog.forget(self.process.pid)
        shutil.rmtree(self.directory, ignore_errors=True)
        if self.watchdog and self.directory:
            self.watchdog.forget_directory(self.directory)


class RedisServer(_Server):
    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if not binary:
            raise BackingError("redis-server is not installed: run `make setup` (Debian: apt-get install redis-server)")
        self._make_directory("mlpatterns-redis-")
        with _stopped_on_failure(self):
            self._spawn(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self.directory,
                    "--logfile",
                    "",
                ]
            )
            _wait(self._ping, f"redis-server on port {self.port}", self.process)
        return self

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def postgres_bindir() -> Path:
    """Debian keeps the server binaries (initdb, postgres) in a versioned directory off PATH."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise BackingError(
            "PostgreSQL server binaries not found: run `make setup` (Debian: apt-get install postgresql)"
        )
    return Path(candidates[-1]).parent


class PostgresServer(_Server):
    """initdb + postgres in a temporary directory. As root, the server runs as the `postgres` user."""

    superuser = "postgres"
    stop_signal = signal.SIGINT  # PostgreSQL's fast shutdown; SIGTERM would wait for every client to disconnect

    def _as_server_user(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise BackingError("running as root needs a `postgres` system user to run PostgreSQL") from None
        # setpriv execs in place, so the process we hold is the server itself.
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]

    def start(self) -> "PostgresServer":
        bindir = postgres_bindir()
        prefix = self._as_server_user()
        self._make_directory("mlpatterns-postgres-")
        with _stopped_on_failure(self):
            data, sockets = Path(self.directory, "data"), Path(self.directory, "sockets")
            data.mkdir()
            sockets.mkdir()
            if prefix:
                for path in (self.directory, data, sockets):
                    shutil.chown(path, "postgres", "postgres")
            initdb = subprocess.run(
                prefix
                + [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.superuser,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ],
                capture_output=True,
                text=True,
            )
            if initdb.returncode != 0:
                raise BackingError(f"initdb failed: {initdb.stderr.strip()}")
            self._spawn(
                prefix
                + [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(sockets),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "synchronous_commit=off",
                    # Its dynamic shared memory as files in the data directory, not /dev/shm: a server that
                    # crashes (or is killed) leaves nothing behind once the directory is removed.
                    "-c",
                    "dynamic_shared_memory_type=mmap",
                ]
            )
            _wait(self._accepts, f"PostgreSQL on port {self.port}", self.process)
        return self

    def _connect(self, dbname: str = "postgres"):
        return psycopg2.connect(host="127.0.0.1", port=self.port, user=self.superuser, dbname=dbname, connect_timeout=2)

    def _accepts(self) -> bool:
        try:
            self._connect().close()
            return True
        except psycopg2.OperationalError:
            return False

    def create_database(self, user: str, password: str, dbname: str) -> None:
        """What the postgres image does with POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB."""
        connection = self._connect()
        connection.autocommit = True
        with connection.cursor() as cursor:
            if user != self.superuser:
                cursor.execute(f"CREATE ROLE {_identifier(user)} LOGIN PASSWORD %s", (password,))
            if dbname != "postgres":
                cursor.execute(f"CREATE DATABASE {_identifier(dbname)} OWNER {_identifier(user)}")
        connection.close()


@contextmanager
def _stopped_on_failure(server):
    """A server that fails to start is stopped and its directory removed before the error goes on."""
    try:
        yield
    except BaseException:
        server.stop()
        raise


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise BackingError(f"unsupported PostgreSQL name {name!r}: letters, digits and _ only")
    return f'"{name}"'
