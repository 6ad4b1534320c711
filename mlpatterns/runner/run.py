"""Start a pattern's services locally, in dependency order, wait for each to be healthy, stop them all.

    with run_pattern("chapter4_serving_patterns/web_single_pattern") as run:
        httpx.get(run.url("web") + "/health")

Each service's output is prefixed with its name (`worker.1`, `worker.2`, ... for the replicas of a service with
`deploy.replicas`). Every process is started in a session of its own (gunicorn forks workers) and stopped by
its whole process group, in reverse start order: TERM (PostgreSQL: SIGINT, its fast shutdown), a wait until
no process of the group is left, KILL after 10 s; temporary directories are removed. Nothing started
elsewhere is touched. Each service's TMPDIR is in the run's scratch directory, so what a killed service leaves
there goes with the run. `stop_on_signals()` (the command line's) makes SIGINT, SIGTERM and SIGHUP stop the
run. If the runner itself dies, even by SIGKILL, its watchdog process stops and removes all the same
(watchdog.py says why a watchdog and not a parent-death signal).

Supervision. Once the pattern is up, a supervisor thread watches every long-running process and backing
server (not one-shot jobs that others wait on with `service_completed_successfully`). An exit is reported at
once, `<service> exited with code N` with the service's last 20 log lines, the rest of its process group is
stopped (a killed gunicorn master's workers), and the service's compose `restart` key decides:

- `no` (the default): exit code 0 means the job is done and is left so; any other exit stops the pattern;
- `always`, `unless-stopped`: restarted after a backoff (0.5 s, doubled each time, at most 8 s);
- `on-failure[:N]`: restarted after a non-zero exit, at most N times (no N: no limit of its own).
A service restarted 5 times within 60 s gives up and stops the pattern. A backing server (Redis, PostgreSQL)
that exits always stops the pattern: its data lived in the run. `make up` then stops everything and exits 1;
`run_pattern` records the reason in `run.failure` and raises RunnerError with it when its block ends. An exit
that a test causes on purpose goes through `run.kill(name)`: reported, restarted by the policy, never a failure.
`run.processes(name)` always lists the current processes.
"""

import collections
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mlpatterns.runner.backing import BackingError, PostgresServer, RedisServer, free_port, port_in_use
from mlpatterns.runner.compose import ComposeError, Service, load_services, start_order
from mlpatterns.runner.watchdog import Watchdog, stop_groups

REPO_ROOT = Path(__file__).resolve().parents[2]
COLOURS = ["36", "33", "35", "32", "34", "31"]
TAIL_LINES = 20  # of a service's log, in the report of its exit
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0  # seconds before a restart, doubled each time
CRASH_LOOP_RESTARTS, CRASH_LOOP_WINDOW = 5, 60.0  # more restarts than this within the window: give up


class RunnerError(RuntimeError):
    pass


class StopRequested(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP reached the runner (see stop_on_signals)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class RunningService:
    service: Service
    port: int | None
    host: str = "127.0.0.1"
    processes: list[subprocess.Popen] = field(default_factory=list)  # one per replica
    backing: RedisServer | PostgresServer | None = None
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    readers: list[threading.Thread] = field(default_factory=list)
    one_shot: bool = False  # others wait for it to complete: its exit is its job
    restarts: list[float] = field(default_factory=list)  # monotonic times
    due: dict[int, float] = field(default_factory=dict)  # replica index -> when to restart it

    def label(self, index: int) -> str:
        return self.service.name if self.service.replicas == 1 else f"{self.service.name}.{index + 1}"

    def tail(self, index: int) -> list[str]:
        """The last lines of one replica's output (or of the backing server's log)."""
        if self.backing is not None:
            return self.backing.tail(TAIL_LINES)
        if self.service.replicas == 1:
            return list(self.log)[-TAIL_LINES:]
        prefix = f"{self.label(index)} | "
        return [line for line in self.log if line.startswith(prefix)][-TAIL_LINES:]

    @property
    def process(self) -> subprocess.Popen | None:
        """The service's process (its first replica's); None for a backing server or zero replicas."""
        return self.processes[0] if self.processes else None


class PatternRun:
    """A started pattern. `url(name)` is where service `name` listens on this machine."""

    def __init__(
        self,
        pattern_dir: Path,
        free_ports: bool,
        echo: bool,
        environ: dict[str, str],
        overrides: dict[str, dict[str, str]],
    ):
        self.pattern_dir = pattern_dir
        self.free_ports = free_ports
        self.echo = echo
        self.environ = environ
        self.overrides = overrides
        try:
            self.services = start_order(load_services(pattern_dir / "docker-compose.yml"))
        except ComposeError as error:
            raise RunnerError(str(error)) from None
        unknown = set(overrides) - {s.name for s in self.services}
        if unknown:
            raise RunnerError(f"overrides name no service of {pattern_dir.name}: {', '.join(sorted(unknown))}")
        self.running: dict[str, RunningService] = {}
        self.reports: list[str] = []  # every exit the supervisor saw, with its log lines and what followed
        self.failure: str | None = None  # the exit that stopped the pattern
        self.failed = threading.Event()
        self._expected: set[int] = set()  # pids killed on purpose (run.kill)
        self._cleared: set[int] = set()  # pids whose whole group is gone
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.watchdog = Watchdog()
        # Scratch space of this run, `{run_dir}` in x-local values: where compose would mount a volume.
        self.run_dir = tempfile.mkdtemp(prefix="mlpatterns-run-")
        self.watchdog.directory(self.run_dir)
        os.mkdir(os.path.join(self.run_dir, "tmp"))  # the services' TMPDIR

    # -- addresses -------------------------------------------------------------------------------------
    def port(self, name: str) -> int:
        port = self.running[name].port
        if port is None:
            no_replica = self.running[name].service.replicas == 0
            raise RunnerError(f"service {name!r} " + ("runs no replica" if no_replica else "publishes no port"))
        return port

    def url(self, name: str) -> str:
        return f"http://{self.running[name].host}:{self.port(name)}"

    def logs(self, name: str) -> str:
        """The service's last output lines (of all its replicas, each line prefixed `name.N | ` if several)."""
        return "\n".join(self.running[name].log)

    def processes(self, name: str) -> list[subprocess.Popen]:
        """The current processes of service `name`, one per replica (each leads its own process group)."""
        return list(self.running[name].processes)

    def kill(self, name: str, replica: int = 0, signum: int = signal.SIGKILL) -> subprocess.Popen:
        """Send `signum` to one process of the service (its replica's, or the backing server's) on purpose:
        the supervisor reports the exit and applies the restart policy, but it is no failure of the run."""
        running = self.running[name]
        process = running.backing.process if running.backing is not None else running.processes[replica]
        self._expected.add(process.pid)
        process.send_signal(signum)
        return process

    def _choose_port(self, service: Service) -> int | None:
        if service.target_port is None or service.replicas == 0:
            return None
        if self.free_ports or service.published_port is None:
            return free_port()
        if port_in_use(service.published_port):
            raise RunnerError(
                f"port {service.published_port} (service {service.name!r}) is taken by another program: "
                "stop it, or run with free ports (`make up P=... FREE_PORTS=1`)"
            )
        return service.published_port

    def _rewrite(self, value: str) -> str:
        """Compose addresses (`redis:6379`, `http://web:8000`) become this run's local addresses."""
        for running in self.running.values():
            target = running.service.target_port
            if running.port is not None:
                local = f"{running.host}:{running.port}"
                value = re.sub(rf"(?<![\w.-]){re.escape(running.service.name)}:{target}\b", local, value)
        return value

    # -- starting ----------------------------------------------------------------------------------------
    def start(self) -> None:
        waited_for = {
            name
            for service in self.services
            for name, condition in service.depends_on.items()
            if condition == "service_completed_successfully"
        }
        for service in self.services:
            running = RunningService(service, self._choose_port(service), one_shot=service.name in waited_for)
            self.running[service.name] = running
            self._wait_for_dependencies(service)
            if service.kind == "process":
                self._start_process(running)
            else:
                self._start_backing(running)

    def _start_backing(self, running: RunningService) -> None:
        service = running.service
        env = service.environment
        user_url = self.environ.get("REDIS_URL" if service.kind == "redis" else "DATABASE_URL")
        if user_url:
            # The user's own server stands in for this service: its address replaces the compose one.
            address = urlsplit(user_url)
            running.host = address.hostname or "127.0.0.1"
            running.port = address.port or service.target_port
            self._say(service.name, f"using the server of {'REDIS_URL' if service.kind == 'redis' else 'DATABASE_URL'}")
            return
        try:
            # A server starts in about a second; a stop signal waits for it, so that none is half recorded.
            with _signals_deferred():
                if service.kind == "redis":
                    running.backing = RedisServer(running.port, self.watchdog)
                    running.backing.start()
                else:
                    running.backing = server = PostgresServer(running.port, self.watchdog)
                    server.start()
                    user = env.get("POSTGRES_USER", "postgres")
                    server.create_database(user, env.get("POSTGRES_PASSWORD", ""), env.get("POSTGRES_DB", user))
        except BackingError as error:
            raise RunnerError(f"{service.name}: {error}") from None
        self._say(
            service.name, f"{service.kind} (pid {running.backing.process.pid}) listening on 127.0.0.1:{running.port}"
        )

    def _process_env(self, running: RunningService) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.environ)
        # The project's interpreter and tools (gunicorn, python) come first on PATH; Debian keeps daemons such as
        # haproxy in the sbin directories, which a user's PATH may lack.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", ""), "/usr/sbin", "/sbin"])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        service_env = {**running.service.environment, **self.overrides.get(running.service.name, {})}
        for key, value in service_env.items():
            env[key] = self._rewrite(value.replace("{run_dir}", self.run_dir))
        for key in ("REDIS_URL", "DATABASE_URL"):
            if key in self.environ and key in running.service.environment:
                env[key] = self.environ[key]
        if running.port is not None:
            env["HOST"], env["PORT"] = "127.0.0.1", str(running.port)
        # What a service leaves in its temporary directory (a SIGKILLed gunicorn's metrics) goes with the run.
        env["TMPDIR"] = os.path.join(self.run_dir, "tmp")
        return env

    def _start_process(self, running: RunningService) -> None:
        service = running.service
        if not service.command:
            raise RunnerError(f"service {service.name!r} has no `command` in docker-compose.yml")
        if not shutil.which(service.command[0], path=self._process_env(running)["PATH"]):
            raise RunnerError(f"service {service.name!r}: {service.command[0]} is not installed: run `make setup`")
        for index in range(service.replicas):
            self._spawn(running, index)
        if service.replicas == 0:
            self._say(service.name, "deploy.replicas is 0: not started")

    def _spawn(self, running: RunningService, index: int) -> None:
        """Start (or restart) replica `index` of the service, in a process group of its own that the watchdog
        knows before a signal can interrupt us."""
        service, label = running.service, running.label(index)
        with _signals_deferred():
            process = subprocess.Popen(
                service.command,
                cwd=REPO_ROOT,
                env=self._process_env(running),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: gunicorn's workers stop with it
            )
            self.watchdog.group(process.pid, signal.SIGTERM)
            reader = threading.Thread(target=self._pump, args=(running, process, label), daemon=True)
            if index < len(running.processes):
                running.processes[index], running.readers[index] = process, reader
            else:
                running.processes.append(process)
                running.readers.append(reader)
        reader.start()
        where = f" on 127.0.0.1:{running.port}" if running.port else ""
        self._say(label, f"started (pid {process.pid}){where}: {shlex.join(service.command)}")

    def _pump(self, running: RunningService, process: subprocess.Popen, label: str) -> None:
        colour = COLOURS[list(self.running).index(running.service.name) % len(COLOURS)]
        several = running.service.replicas > 1
        with process.stdout:  # closed at the end of its output: nothing else reads it, and GC would warn
            for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip()
                running.log.append(f"{label} | {line}" if several else line)
                if self.echo:
                    self._print(f"\033[{colour}m{label:>10} |\033[0m {line}")

    def _say(self, name: str, message: str) -> None:
        if self.echo:
            self._print(f"{name:>10} | {message}")

    def _print(self, text: str) -> None:
        try:
            print(text, flush=True)
        except OSError:  # the terminal is gone (SIGHUP): keep draining the services' output, stop on, quietly
            self.echo = False

    # -- waiting -----------------------------------------------------------------------------------------
    def _wait_for_dependencies(self, service: Service) -> None:
        for name, condition in service.depends_on.items():
            running = self.running[name]
            if condition == "service_healthy":
                self.wait_healthy(name)
            elif condition == "service_completed_successfully":
                self._wait_completed(running)

    def _wait_completed(self, running: RunningService, timeout: float = 600.0) -> None:
        """Every replica of a one-shot service must exit with 0."""
        deadline = time.monotonic() + timeout
        for process, reader in zip(running.processes, running.readers, strict=True):
            try:
                code = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RunnerError(f"{running.service.name} did not finish within {timeout:.0f} s") from None
            reader.join(5)
            self._clear(process)
            if code != 0:
                raise RunnerError(
                    f"{running.service.name} failed with exit code {code}:\n{self.logs(running.service.name)}"
                )

    def wait_healthy(self, name: str, timeout: float = 60.0) -> None:
        """Poll the service's compose healthcheck (rewritten to its local port) until it passes."""
        running = self.running[name]
        if running.backing is not None or running.process is None:
            return
        if not running.service.healthcheck:
            if running.port is not None:
                self._wait_listening(running, timeout)
            return
        command = [self._local_check_arg(running, arg) for arg in running.service.healthcheck]
        env = self._process_env(running)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process, reader in zip(running.processes, running.readers, strict=True):  # replicas share one check
                if process.poll() is not None:
                    reader.join(1)  # its last lines
                    raise RunnerError(
                        f"{name} exited with code {process.returncode} before it was healthy:\n{self.logs(name)}"
                    )
            if subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True).returncode == 0:
                self._say(name, "healthy")
                return
            time.sleep(0.2)
        raise RunnerError(f"{name} was not healthy within {timeout:.0f} s:\n{self.logs(name)}")

    def _wait_listening(self, running: RunningService, timeout: float) -> None:
        """A service without a healthcheck is ready once its port accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                running.readers[0].join(1)  # its last lines
                raise RunnerError(
                    f"{running.service.name} exited with code {running.process.returncode}:\n"
                    f"{self.logs(running.service.name)}"
                )
            if port_in_use(running.port):
                return
            time.sleep(0.1)
        raise RunnerError(f"{running.service.name} did not listen on port {running.port} within {timeout:.0f} s")

    def _local_check_arg(self, running: RunningService, arg: str) -> str:
        target = running.service.target_port
        return re.sub(rf"\b(127\.0\.0\.1|localhost):{target}\b", f"127.0.0.1:{running.port}", arg) if target else arg

    def wait_all_healthy(self) -> None:
        for name in self.running:
            self.wait_healthy(name)

    # -- supervising -------------------------------------------------------------------------------------
    def supervise(self) -> None:
        """Watch every long-running process and backing server from a thread (the module docstring)."""
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._supervisor.start()

    def wait(self) -> str:
        """Block until the supervisor stops the pattern; the reason. Signals still interrupt it."""
        while not self.failed.wait(0.5):
            pass
        return self.failure or ""

    def _supervise(self) -> None:
        seen: set[int] = set()  # pids whose exit is handled
        while not self._stopping.wait(0.1):
            try:
                for running in list(self.running.values()):
                    if not running.one_shot:
                        self._check(running, seen)
            except Exception as error:  # a bug here must not leave the run unsupervised without a word
                self._fail(f"the supervisor failed: {error!r}")
            if self.failed.is_set():
                return

    def _check(self, running: RunningService, seen: set[int]) -> None:
        backing = running.backing
        if backing is not None:
            process = backing.process
            if process.pid not in seen and process.poll() is not None and not backing.stopped:
                seen.add(process.pid)
                report = self._report(running, 0, process.returncode)
                if process.pid not in self._expected:
                    self._fail(f"{report}\na backing server is not restarted: its data lived in the run")
            return
        for index, process in enumerate(running.processes):
            if process.pid in seen:
                if index in running.due and time.monotonic() >= running.due[index]:
                    del running.due[index]
                    self._spawn(running, index)
                continue
            if process.poll() is None:
                continue
            seen.add(process.pid)
            report = self._report(running, index, process.returncode)
            self._clear(process)  # what is left of its group: a killed gunicorn master's workers
            self._decide(running, index, process.returncode, report, expected=process.pid in self._expected)

    def _decide(self, running: RunningService, index: int, code: int, report: str, expected: bool) -> None:
        """The compose `restart` policy for one exit."""
        policy, label = running.service.restart, running.label(index)
        if policy == "no" or (policy.startswith("on-failure") and code == 0):
            if code != 0 and not expected:
                self._fail(f"{report}\nnot restarted (restart: {policy})")
            return
        now = time.monotonic()
        recent = [t for t in running.restarts if now - t < CRASH_LOOP_WINDOW]
        limit = running.service.max_restarts
        if expected:  # a test's own kill: restarted, not counted
            running.due[index] = now + BACKOFF_FIRST
        elif limit is not None and len(running.restarts) >= limit:
            self._fail(f"{report}\ngave up after {limit} restarts (restart: {policy})")
        elif len(recent) >= CRASH_LOOP_RESTARTS:
            self._fail(
                f"{report}\ngave up after {len(recent)} restarts within {CRASH_LOOP_WINDOW:.0f} s (restart: {policy})"
            )
        else:
            delay = min(BACKOFF_FIRST * 2 ** len(recent), BACKOFF_MAX)
            running.restarts.append(now)
            running.due[index] = now + delay
            self._say(label, f"restarting in {delay:g} s (restart: {policy}; restart {len(running.restarts)})")

    def _exit_line(self, running: RunningService, index: int, code: int) -> str:
        what = f" ({running.service.kind})" if running.backing is not None else ""
        name = f" ({signal.Signals(-code).name})" if code < 0 and -code in signal.Signals._value2member_map_ else ""
        return f"{running.label(index)}{what} exited with code {code}{name}"

    def _report(self, running: RunningService, index: int, code: int) -> str:
        """Say at once that a process exited, with its last log lines."""
        if running.backing is None:
            running.readers[index].join(0.5)  # its last lines, if nothing else holds its output open
        lines = running.tail(index)
        report = self._exit_line(running, index, code)
        if lines:
            report += "; its last log lines:\n" + "\n".join(f"    {line}" for line in lines)
        self.reports.append(report)
        if self.echo:
            self._print(f"{running.label(index):>10} | {report}")
        return report

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            self._say("runner", f"stopping the pattern: {reason}")
        self.failed.set()

    def _clear(self, process: subprocess.Popen) -> None:
        """Stop what is left of an exited process's group and let the watchdog forget it."""
        stop_groups({process.pid: signal.SIGTERM})
        process.wait()
        self.watchdog.forget(process.pid)
        self._cleared.add(process.pid)  # its group id may be reused now: never signal it again

    # -- stopping ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every service, whole process groups, in reverse start order; remove the temporary directories.
        Signals that arrive meanwhile are ignored: a stop is already under way."""
        with _signals_deferred(drop=True):
            self._stopping.set()
            if self._supervisor is not None:
                self._supervisor.join()
            for running in reversed(list(self.running.values())):
                processes = [process for process in running.processes if process.pid not in self._cleared]
                stop_groups({process.pid: signal.SIGTERM for process in processes})
                for process in processes:
                    process.wait()
                    self.watchdog.forget(process.pid)
                for reader in running.readers:
                    reader.join(5)
                if running.backing is not None:
                    running.backing.stop()
                self._say(running.service.name, "stopped")
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.watchdog.forget_directory(self.run_dir)
            self.watchdog.close()


# -- signals ---------------------------------------------------------------------------------------------
_deferral = threading.local()
_pending: list[int] = []  # signals that arrived during a deferred section of the main thread


def _on_signal(signum, frame):
    if getattr(_deferral, "depth", 0):
        _pending.append(signum)
        return
    raise StopRequested(signum)


@contextmanager
def _signals_deferred(drop: bool = False):
    """A section of the main thread that a stop signal must not cut in two (a child started but not yet
    recorded, a stop half done): the signal takes effect at its end, or is dropped (`drop`)."""
    _deferral.depth = getattr(_deferral, "depth", 0) + 1
    try:
        yield
    finally:
        _deferral.depth -= 1
        # Handlers run in the main thread only: only its sections defer signals.
        if not _deferral.depth and _pending and threading.current_thread() is threading.main_thread():
            signum = _pending.pop()
            _pending.clear()
            if not drop:
                raise StopRequested(signum)


def pattern_dirs() -> list[Path]:
    """Every pattern: a directory `chapter*/*` with a docker-compose.yml (the runner, the demo and the
    repository-wide tests all find patterns this way)."""
    return sorted(compose.parent for compose in REPO_ROOT.glob("chapter*/*/docker-compose.yml"))


def stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal) stop the run: the services are stopped on the way out.
    Installed explicitly, also when SIGINT was ignored at start (`make up &` in a non-interactive shell)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)


@contextmanager
def run_pattern(
    pattern_dir: str | Path,
    free_ports: bool = True,
    echo: bool = False,
    environ: dict[str, str] | None = None,
    overrides: dict[str, dict[str, str]] | None = None,
):
    """Start every service of the pattern, wait until all are healthy, supervise them, and stop them all on the
    way out; if the supervisor stopped the pattern (an unexpected exit), RunnerError names the exit then.

    `environ` may name the user's own REDIS_URL / DATABASE_URL (default: taken from the environment);
    `overrides` sets environment variables of single services over their compose values (tests use it).
    """
    path = Path(pattern_dir)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not (path / "docker-compose.yml").exists():
        raise RunnerError(f"{pattern_dir}: no docker-compose.yml (is it a pattern directory?)")
    run = PatternRun(
        path, free_ports, echo, dict(environ if environ is not None else _user_backing_env()), overrides or {}
    )
    try:
        run.start()
        run.wait_all_healthy()
        run.supervise()
        yield run
    except BaseException as error:
        if run.failure:
            error.add_note(f"the supervisor stopped the pattern: {run.failure}")
        raise
    finally:
        run.stop()
    if run.failure:
        raise RunnerError(run.failure)


def _user_backing_env() -> dict[str, str]:
    return {key: os.environ[key] for key in ("REDIS_URL", "DATABASE_URL") if os.environ.get(key)}
