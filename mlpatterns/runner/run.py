"""Start a pattern's services locally, in dependency order, wait for each to be healthy, stop them all.

    with run_pattern("chapter4_serving_patterns/web_single_pattern") as run:
        httpx.get(run.url("web") + "/health")

Each service's output is prefixed with its name (`worker.1`, `worker.2`, ... for the replicas of a service with
`deploy.replicas`). Every process is started in a session of its own (gunicorn forks workers) and stopped by
its process group id, TERM first, KILL if it lingers; temporary directories are removed. Nothing started
elsewhere is touched.
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

REPO_ROOT = Path(__file__).resolve().parents[2]
COLOURS = ["36", "33", "35", "32", "34", "31"]


class RunnerError(RuntimeError):
    pass


@dataclass
class RunningService:
    service: Service
    port: int | None
    host: str = "127.0.0.1"
    processes: list[subprocess.Popen] = field(default_factory=list)  # one per replica
    backing: RedisServer | PostgresServer | None = None
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    readers: list[threading.Thread] = field(default_factory=list)

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
        # Scratch space of this run, `{run_dir}` in x-local values: where compose would mount a volume.
        self.run_dir = tempfile.mkdtemp(prefix="mlpatterns-run-")

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
        """The processes of service `name`, one per replica (each leads its own process group)."""
        return list(self.running[name].processes)

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
        for service in self.services:
            running = RunningService(service, self._choose_port(service))
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
            if service.kind == "redis":
                running.backing = RedisServer(running.port).start()
            else:
                server = PostgresServer(running.port).start()
                running.backing = server
                user = env.get("POSTGRES_USER", "postgres")
                server.create_database(user, env.get("POSTGRES_PASSWORD", ""), env.get("POSTGRES_DB", user))
        except BackingError as error:
            raise RunnerError(f"{service.name}: {error}") from None
        self._say(service.name, f"{service.kind} listening on 127.0.0.1:{running.port}")

    def _process_env(self, running: RunningService) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.environ)
        # The project's interpreter and tools (gunicorn, python) come first on PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        service_env = {**running.service.environment, **self.overrides.get(running.service.name, {})}
        for key, value in service_env.items():
            env[key] = self._rewrite(value.replace("{run_dir}", self.run_dir))
        for key in ("REDIS_URL", "DATABASE_URL"):
            if key in self.environ and key in running.service.environment:
                env[key] = self.environ[key]
        if running.port is not None:
            env["HOST"], env["PORT"] = "127.0.0.1", str(running.port)
        return env

    def _start_process(self, running: RunningService) -> None:
        service = running.service
        if not service.command:
            raise RunnerError(f"service {service.name!r} has no `command` in docker-compose.yml")
        env = self._process_env(running)
        for replica in range(1, service.replicas + 1):
            label = service.name if service.replicas == 1 else f"{service.name}.{replica}"
            process = subprocess.Popen(
                service.command,
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: gunicorn's workers stop with it
            )
            running.processes.append(process)
            reader = threading.Thread(target=self._pump, args=(running, process, label), daemon=True)
            running.readers.append(reader)
            reader.start()
            where = f" on 127.0.0.1:{running.port}" if running.port else ""
            self._say(label, f"started (pid {process.pid}){where}: {shlex.join(service.command)}")
        if service.replicas == 0:
            self._say(service.name, "deploy.replicas is 0: not started")

    def _pump(self, running: RunningService, process: subprocess.Popen, label: str) -> None:
        colour = COLOURS[list(self.running).index(running.service.name) % len(COLOURS)]
        several = running.service.replicas > 1
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            running.log.append(f"{label} | {line}" if several else line)
            if self.echo:
                print(f"\033[{colour}m{label:>10} |\033[0m {line}", flush=True)

    def _say(self, name: str, message: str) -> None:
        if self.echo:
            print(f"{name:>10} | {message}", flush=True)

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
            for process in running.processes:  # replicas share one check (they have no port of their own)
                if process.poll() is not None:
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

    # -- stopping ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        for running in reversed(list(self.running.values())):
            _stop_groups(running.processes)
            for reader in running.readers:
                reader.join(5)
            if running.backing is not None:
                running.backing.stop()
            self._say(running.service.name, "stopped")
        shutil.rmtree(self.run_dir, ignore_errors=True)


def stop_on_sigterm() -> None:
    """Make `kill` (SIGTERM) stop a run as Ctrl-C does: the services are stopped on the way out."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _stop_groups(processes: list[subprocess.Popen], timeout: float = 15.0) -> None:
    """TERM the process groups we created for these children (the replicas of one service stop together);
    KILL a group that has not gone in time."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the leader is not reaped yet, so the group id is still ours
            process.wait()


@contextmanager
def run_pattern(
    pattern_dir: str | Path,
    free_ports: bool = True,
    echo: bool = False,
    environ: dict[str, str] | None = None,
    overrides: dict[str, dict[str, str]] | None = None,
):
    """Start every service of the pattern, wait until all are healthy, and stop them all on the way out.

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
        yield run
    finally:
        run.stop()


def _user_backing_env() -> dict[str, str]:
    return {key: os.environ[key] for key in ("REDIS_URL", "DATABASE_URL") if os.environ.get(key)}
