"""The runner as a supervisor, with real processes and real signals: stop signals, a SIGKILLed runner, a killed
gunicorn master, a backing server that dies, restart policies.

Each `make up` here runs with TMPDIR set to a directory of the test's own, so that "no temporary directory left"
is checked exactly; every pid seen (from the runner's output and /proc) is killed on the way out if still alive.
"""

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from mlpatterns.runner import RunnerError, run_pattern
from mlpatterns.runner.run import REPO_ROOT
from mlpatterns.tests.test_runner import alive, wait_for, write_pattern

WEB_SINGLE = REPO_ROOT / "chapter4_serving_patterns/web_single_pattern"


def processes_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    return children


def family(pids) -> set[int]:
    """The pids and all their descendants now (gunicorn's workers, PostgreSQL's backends)."""
    children, found, todo = processes_by_parent(), set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Up:
    """`python -m mlpatterns.runner up PATTERN --free-ports` in a session of its own, its output read by a thread."""

    def __init__(self, pattern: Path, ignore_sigint: bool = False, terminal: bool = False):
        # A directory of its own as TMPDIR, readable by the `postgres` user (pytest's tmp_path is not).
        self.tmpdir = tempfile.mkdtemp(prefix="supervisor-test-")
        os.chmod(self.tmpdir, 0o755)
        command = [sys.executable, "-m", "mlpatterns.runner", "up", str(pattern), "--free-ports"]
        if ignore_sigint:  # what `make up &` in a non-interactive shell does: SIGINT ignored, kept across exec
            command = [
                sys.executable,
                "-c",
                "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "os.execv(sys.argv[1], sys.argv[1:])",
                *command,
            ]
        env = {**os.environ, "TMPDIR": self.tmpdir}
        self.terminal = None
        if terminal:  # a terminal of its own (`setsid -c` makes it the controlling one), closed to hang up
            self.terminal, child_end = os.openpty()
            self.process = subprocess.Popen(["setsid", "-c", *command], stdin=child_end, stdout=child_end, env=env)
            os.close(child_end)
        else:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env
            )
        self.lines: list[str] = []
        self.seen: set[int] = set()
        self.hung_up = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        if self.terminal is None:
            self.lines.extend(self.process.stdout)
            return
        # A read blocked on the terminal would keep it open after os.close: poll, and stop before it is closed.
        while not self.hung_up.is_set():
            if select.select([self.terminal], [], [], 0.1)[0]:
                try:
                    chunk = os.read(self.terminal, 65536)
                except OSError:  # the runner has exited
                    return
                self.lines.append(chunk.decode(errors="replace").replace("\r\n", "\n"))

    def hang_up(self) -> None:
        """Close the terminal, as closing a terminal window does: SIGHUP, and output goes nowhere."""
        self.hung_up.set()
        self.reader.join()
        os.close(self.terminal)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.process.poll() is None or self.reader.is_alive(), f"runner exited:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout:.0f} s:\n{self.output}"
            time.sleep(0.1)

    def pids(self) -> set[int]:
        """Every process the runner said it started, and their descendants now."""
        self.seen |= family(int(pid) for pid in re.findall(r"\(pid (\d+)\)", self.output))
        return self.seen

    def ports(self) -> set[int]:
        return {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", self.output)}

    def finish(self, timeout: float = 60.0) -> int:
        code = self.process.wait(timeout)
        self.reader.join(10)
        return code

    def cleanup(self) -> None:
        """Whatever a failed test left: the runner, every process seen, the temporary directory."""
        if self.terminal is not None and not self.hung_up.is_set():
            self.hang_up()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def assert_nothing_left(self, timeout: float = 15.0) -> None:
        ports = self.ports()
        assert ports and self.seen
        deadline = time.monotonic() + timeout
        while any(alive(pid) for pid in self.seen) or any(listening(p) for p in ports) or os.listdir(self.tmpdir):
            if time.monotonic() > deadline:
                left = [pid for pid in self.seen if alive(pid)]
                raise AssertionError(
                    f"left: pids {left}, ports {[p for p in ports if listening(p)]}, "
                    f"temporary files {os.listdir(self.tmpdir)}\n{self.output}"
                )
            time.sleep(0.1)


@pytest.fixture
def up():
    started: list[Up] = []

    def start(pattern: Path, **options) -> Up:
        started.append(Up(pattern, **options))
        return started[-1]

    yield start
    for each in started:
        each.cleanup()


@pytest.mark.parametrize(
    ("signum", "ignore_sigint"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGHUP, False), (signal.SIGINT, True)],
    ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGINT-as-background-job"],
)
def test_a_stop_signal_stops_every_process_port_and_directory(tmp_path, up, signum, ignore_sigint):
    run = up(write_pattern(tmp_path), ignore_sigint=ignore_sigint)
    run.wait_for_output("Press Ctrl-C to stop.")
    pids = run.pids()
    assert len(pids) >= 5  # redis, the postmaster and its helpers, the app
    assert os.listdir(run.tmpdir)  # the run's scratch space, Redis's and PostgreSQL's directories
    run.process.send_signal(signum)
    assert run.finish() == 0, run.output
    assert f"{signal.Signals(signum).name}: stopping..." in run.output
    assert "app | stopped" in run.output and "db | stopped" in run.output
    run.assert_nothing_left(timeout=2)  # stopped means gone: nothing may linger after the runner exits


def test_closing_the_terminal_stops_everything(tmp_path, up):
    run = up(write_pattern(tmp_path), terminal=True)
    run.wait_for_output("Press Ctrl-C to stop.")
    run.pids()
    run.hang_up()
    assert run.finish() == 0
    run.assert_nothing_left(timeout=2)


def web_with_backing(directory: Path) -> Path:
    """web_single's gunicorn service (2 workers) beside a Redis and a PostgreSQL."""
    web = yaml.safe_load((WEB_SINGLE / "docker-compose.yml").read_text())["services"]["web"]
    services = {"cache": {"image": "redis:7"}, "db": {"image": "postgres:16"}, "web": web}
    (directory / "docker-compose.yml").write_text(yaml.safe_dump({"services": services}))
    return directory


def test_a_sigkilled_runner_takes_every_child_with_it(tmp_path, up):
    run = up(web_with_backing(tmp_path))
    run.wait_for_output("Press Ctrl-C to stop.")
    wait_for(lambda: len(run.pids()) >= 3 + 2 + 5, timeout=30)  # redis; gunicorn and 2 workers; postgres
    run.process.kill()
    run.finish()
    run.assert_nothing_left(timeout=15)


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health").status_code == 200
    except httpx.TransportError:
        return False


def gunicorn(run) -> tuple[subprocess.Popen, set[int]]:
    master = run.processes("web")[0]
    wait_for(lambda: len(family([master.pid])) == 3, timeout=30)
    return master, family([master.pid]) - {master.pid}


def test_a_killed_gunicorn_master_is_reported_its_workers_stopped_and_it_is_restarted():
    with run_pattern(WEB_SINGLE) as run:
        master, workers = gunicorn(run)
        run.kill("web")  # restart: unless-stopped
        wait_for(lambda: run.reports, timeout=5)
        assert run.reports[0].startswith("web exited with code -9 (SIGKILL); its last log lines:\n")
        assert "Booting worker" in run.reports[0]
        wait_for(lambda: not any(alive(pid) for pid in workers), timeout=15)
        wait_for(lambda: run.processes("web")[0].pid != master.pid, timeout=5)
        wait_for(lambda: healthy(run.url("web")), timeout=60)
        new_master, new_workers = gunicorn(run)
    assert not any(alive(pid) for pid in {new_master.pid, *new_workers})
    assert run.failure is None


def test_the_stop_after_a_killed_gunicorn_master_stops_its_workers():
    with run_pattern(WEB_SINGLE) as run:
        master, workers = gunicorn(run)
        run.kill("web")
        master.wait(5)
        url = run.url("web")
    assert not any(alive(pid) for pid in workers)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health")


def test_a_backing_server_that_dies_is_reported_and_stops_the_pattern(tmp_path, up):
    run = up(write_pattern(tmp_path))
    run.wait_for_output("Press Ctrl-C to stop.")
    run.pids()
    redis_pid = int(re.search(r"cache \| redis \(pid (\d+)\)", run.output).group(1))
    os.kill(redis_pid, signal.SIGKILL)
    assert run.finish() == 1, run.output
    assert "cache | cache (redis) exited with code -9 (SIGKILL); its last log lines:" in run.output
    assert "Ready to accept connections" in run.output  # a line of redis-server's log
    assert "error: cache (redis) exited with code -9 (SIGKILL)" in run.output
    assert "a backing server is not restarted" in run.output
    run.assert_nothing_left(timeout=2)


def test_a_postgres_that_dies_is_named_when_the_run_ends(tmp_path):
    with pytest.raises(RunnerError, match=r"db \(postgres\) exited with code .*its last log lines:"):
        with run_pattern(write_pattern(tmp_path)) as run:
            postmaster = run.running["db"].backing.process
            # Its fast shutdown, which leaves nothing behind (an immediate one or SIGKILL would leave a SysV
            # shared memory segment): to the runner, any exit of a backing server is one too many.
            os.kill(postmaster.pid, signal.SIGINT)
            wait_for(lambda: run.failure, timeout=10)
            assert run.reports[0].startswith("db (postgres) exited with code")
    assert not alive(postmaster.pid)


# Counts its runs in a file, says so, and fails.
CRASH = "import os; f = open(os.environ['RUNS'], 'a'); f.write('x'); f.close(); print('crash', os.getpid()); exit(2)"
SLEEP = "import time; print('sleeping', flush=True); time.sleep(600)"


def write_services(directory: Path, **services) -> Path:
    spec = {name: {"build": ".", **service} for name, service in services.items()}
    (directory / "docker-compose.yml").write_text(yaml.safe_dump({"services": spec}))
    return directory


def test_restart_on_failure_restarts_a_crashing_service_then_gives_up(tmp_path):
    runs = tmp_path / "runs"
    crash = {"command": ["python", "-c", CRASH], "environment": {"RUNS": str(runs)}, "restart": "on-failure:2"}
    pattern = write_services(tmp_path, crash=crash, keeper={"command": ["python", "-c", SLEEP]})
    with pytest.raises(RunnerError, match=r"(?s)crash exited with code 2; its last log lines:.*gave up after 2 rest"):
        with run_pattern(pattern) as run:
            wait_for(lambda: run.failure, timeout=15)
            assert runs.read_text() == "xxx"  # the first run and two restarts
            assert len(run.reports) == 3 and all("exited with code 2" in report for report in run.reports)
            keeper = run.processes("keeper")[0]
    assert not alive(keeper.pid)


def test_restart_no_stops_the_pattern_and_exits_1(tmp_path, up):
    fail_later = "import time; print('loading', flush=True); time.sleep(1); print('out of memory'); exit(3)"
    pattern = write_services(
        tmp_path, fail={"command": ["python", "-c", fail_later]}, keeper={"command": ["python", "-c", SLEEP]}
    )
    run = up(pattern)
    run.wait_for_output("Press Ctrl-C to stop.")
    run.pids()
    assert run.finish() == 1, run.output
    assert "fail | fail exited with code 3; its last log lines:\n    loading\n    out of memory\n" in run.output
    assert "error: fail exited with code 3" in run.output and "not restarted (restart: no)" in run.output
    assert "keeper | stopped" in run.output


def test_a_restarted_replica_is_among_the_current_processes(tmp_path):
    (tmp_path / "pids").mkdir()
    worker = {
        "command": [
            "python",
            "-c",
            "import os, time; open(os.environ['PID_DIR'] + f'/{os.getpid()}', 'w'); time.sleep(600)",
        ],
        "environment": {"PID_DIR": str(tmp_path / "pids")},
        "deploy": {"replicas": 2},
        "restart": "unless-stopped",
    }
    with run_pattern(write_services(tmp_path, worker=worker)) as run:
        killed = run.processes("worker")[0]
        killed.kill()  # not through run.kill: under unless-stopped any exit is restarted, no failure
        wait_for(lambda: run.processes("worker")[0].pid != killed.pid, timeout=10)
        current = {process.pid for process in run.processes("worker")}
        wait_for(lambda: current <= {int(path.name) for path in (tmp_path / "pids").iterdir()})
        assert run.reports == ["worker.1 exited with code -9 (SIGKILL)"]
    assert not any(alive(pid) for pid in current)
