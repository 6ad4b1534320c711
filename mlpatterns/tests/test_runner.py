"""The local runner on a toy topology: real Redis and PostgreSQL, a one-shot job, an HTTP service."""

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psycopg2
import pytest
import redis
import yaml

from mlpatterns.runner import RunnerError, run_pattern
from mlpatterns.runner.backing import BackingError, RedisServer, free_port
from mlpatterns.runner.compose import Service, load_services, start_order

# The one-shot job: creates a table in the database named by DATABASE_URL.
INIT = textwrap.dedent("""
    import os, psycopg2
    with psycopg2.connect(os.environ["DATABASE_URL"]) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE made_by_init (id int)")
    print("created table made_by_init")
""")
# The service: writes to the Redis of REDIS_URL, then answers /health on PORT.
SERVE = textwrap.dedent("""
    import http.server, os, redis
    redis.Redis.from_url(os.environ["REDIS_URL"]).set("toy", os.environ["GREETING"])
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
    print("serving", flush=True)
    http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Health).serve_forever()
""")
HEALTHCHECK = {"test": ["CMD", "python", "-m", "mlpatterns.healthcheck", "http://127.0.0.1:8000/health"]}


def write_pattern(directory: Path, app_command: list[str] | None = None, app_port: int = 8000) -> Path:
    services = {
        "cache": {"image": "redis:7"},
        "db": {
            "image": "postgres:16",
            "environment": {"POSTGRES_USER": "toy", "POSTGRES_PASSWORD": "secret", "POSTGRES_DB": "toydb"},
        },
        "init": {
            "build": ".",
            "command": ["python", "-c", INIT],
            "environment": {"DATABASE_URL": "postgresql://toy:secret@db:5432/toydb"},
            "depends_on": {"db": {"condition": "service_started"}},
        },
        "app": {
            "build": ".",
            "command": app_command or ["python", "-c", SERVE],
            "environment": {"REDIS_URL": "redis://cache:6379/0", "PORT": str(app_port)},
            "x-local": {"environment": {"GREETING": "hello"}},
            "ports": [f"{app_port}:{app_port}"],
            "healthcheck": HEALTHCHECK,
            "depends_on": {
                "cache": {"condition": "service_healthy"},
                "init": {"condition": "service_completed_successfully"},
            },
        },
    }
    (directory / "docker-compose.yml").write_text(yaml.safe_dump({"services": services}))
    return directory


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); one we reaped does not exist at all.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_starts_every_service_in_order_and_leaves_nothing_behind(tmp_path):
    with run_pattern(write_pattern(tmp_path)) as run:
        assert httpx.get(run.url("app") + "/health").status_code == 200
        assert redis.Redis(port=run.port("cache")).get("toy") == b"hello"
        with psycopg2.connect(
            host="127.0.0.1", port=run.port("db"), user="toy", password="secret", dbname="toydb"
        ) as db:
            with db.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM made_by_init")
                assert cursor.fetchone() == (0,)
        assert "created table made_by_init" in run.logs("init")
        pids = [r.process.pid for r in run.running.values() if r.process]
        pids += [r.backing.process.pid for r in run.running.values() if r.backing]
        directories = [r.backing.directory for r in run.running.values() if r.backing]
        ports = [run.port(name) for name in ("cache", "db", "app")]
        outputs = [process.stdout for r in run.running.values() for process in r.processes]
        readers = [reader for r in run.running.values() for reader in r.readers]
    assert len(pids) == 4 and not any(alive(pid) for pid in pids)
    for reader in readers:
        reader.join(10)  # the stop waits half a second for each; a loaded machine may take longer
    assert outputs and all(output.closed for output in outputs)  # each process's pipe, not left to the GC
    assert not any(Path(d).exists() for d in directories)
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_service_that_dies_fails_the_run_with_its_log(tmp_path):
    crash = ["python", "-c", "import sys; print('cannot load the model'); sys.exit(3)"]
    with pytest.raises(RunnerError, match=r"(?s)app exited with code 3 before it was healthy.*cannot load the model"):
        with run_pattern(write_pattern(tmp_path, app_command=crash)):
            pass


def test_a_failed_one_shot_job_stops_the_run(tmp_path):
    pattern = write_pattern(tmp_path)
    spec = yaml.safe_load((pattern / "docker-compose.yml").read_text())
    spec["services"]["init"]["command"] = ["python", "-c", "raise SystemExit('no model to load')"]
    (pattern / "docker-compose.yml").write_text(yaml.safe_dump(spec))
    with pytest.raises(RunnerError, match=r"(?s)init failed with exit code 1.*no model to load"):
        with run_pattern(pattern):
            pass


def test_a_taken_published_port_is_reported(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        pattern = write_pattern(tmp_path, app_port=taken)
        spec = yaml.safe_load((pattern / "docker-compose.yml").read_text())
        for name in ("cache", "db"):  # published ports of backing services are not under test here
            spec["services"][name]["ports"] = []
        (pattern / "docker-compose.yml").write_text(yaml.safe_dump(spec))
        with pytest.raises(RunnerError, match=f"port {taken} .service 'app'. is taken by another program"):
            with run_pattern(pattern, free_ports=False):
                pass


def test_the_users_redis_replaces_the_compose_one(tmp_path):
    users = RedisServer(free_port()).start()
    try:
        with run_pattern(write_pattern(tmp_path), environ={"REDIS_URL": users.url}) as run:
            assert run.running["cache"].backing is None
            assert run.port("cache") == users.port
        assert redis.Redis(port=users.port).get("toy") == b"hello"
    finally:
        users.stop()


def test_compose_parsing(tmp_path):
    (tmp_path / "docker-compose.yml").write_text(
        yaml.safe_dump(
            {
                "services": {
                    "api": {
                        "build": ".",
                        "command": "gunicorn app:app",
                        "environment": ["A=1", "B=x=y"],
                        "ports": [{"target": 80, "published": 8080}],
                        "depends_on": ["queue"],
                    },
                    "queue": {"image": "docker.io/library/redis:7.2-alpine", "ports": ["6379"]},
                }
            }
        )
    )
    api, queue = load_services(tmp_path / "docker-compose.yml")
    assert (api.kind, api.command, api.environment, api.ports) == (
        "process",
        ["gunicorn", "app:app"],
        {"A": "1", "B": "x=y"},
        [(8080, 80)],
    )
    assert api.depends_on == {"queue": "service_started"}
    assert (queue.kind, queue.ports) == ("redis", [(6379, 6379)])
    assert [s.name for s in start_order([api, queue])] == ["queue", "api"]


def test_dependency_errors():
    a = Service("a", "process", depends_on={"b": "service_started"})
    b = Service("b", "process", depends_on={"a": "service_started"})
    with pytest.raises(ValueError, match="dependency cycle"):
        start_order([a, b])
    with pytest.raises(ValueError, match="unknown service 'c'"):
        start_order([Service("a", "process", depends_on={"c": "service_started"})])


def test_up_runs_until_ctrl_c_then_stops_everything(tmp_path):
    command = [sys.executable, "-m", "mlpatterns.runner", "up", str(write_pattern(tmp_path)), "--free-ports"]
    runner = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines = []
    try:
        for line in runner.stdout:
            lines.append(line)
            if "Press Ctrl-C to stop." in line:
                break
        output = "".join(lines)
        url = re.search(r"app \| ready at (http://127\.0\.0\.1:\d+)", output).group(1)
        assert httpx.get(url + "/health").status_code == 200
        pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", output)]
        assert len(pids) == 4  # cache, db, init and app
        runner.send_signal(signal.SIGINT)
        rest = runner.communicate(timeout=60)[0]
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 0, output + rest
    assert "app | stopped" in rest and "cache | stopped" in rest and "db | stopped" in rest
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health")


def test_a_backing_server_that_cannot_start_leaves_nothing_behind():
    with socket.socket() as holder:  # the port is taken, so redis-server exits at once
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = RedisServer(holder.getsockname()[1])
        with pytest.raises(BackingError, match="exited with code"):
            server.start()
    assert server.directory and not Path(server.directory).exists()
    assert server.process.poll() is not None


# A worker without a port: leaves its pid in PID_DIR, then waits to be stopped.
WORKER = "import os, time; open(os.path.join(os.environ['PID_DIR'], str(os.getpid())), 'w').close(); time.sleep(600)"


def write_workers(directory: Path, replicas: int) -> Path:
    (directory / "pids").mkdir()
    worker = {
        "build": ".",
        "command": ["python", "-c", WORKER],
        "environment": {"PID_DIR": str(directory / "pids")},
        "deploy": {"replicas": replicas},
    }
    (directory / "docker-compose.yml").write_text(yaml.safe_dump({"services": {"worker": worker}}))
    return directory


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_replicas_run_as_separate_processes_and_all_stop(tmp_path):
    with run_pattern(write_workers(tmp_path, 3), echo=True) as run:
        processes = run.processes("worker")
        pids = {p.pid for p in processes}
        assert len(pids) == 3 and all(alive(pid) for pid in pids)
        assert {os.getpgid(pid) for pid in pids} == pids  # each leads its own process group
        wait_for(lambda: {int(p.name) for p in (tmp_path / "pids").iterdir()} == pids)
    assert not any(alive(pid) for pid in pids)


def test_killing_one_replica_leaves_the_others_running(tmp_path):
    with run_pattern(write_workers(tmp_path, 2)) as run:
        survivor = run.processes("worker")[1]
        killed = run.kill("worker", 0)  # on purpose: reported, but no failure of the run
        assert killed.wait(5) == -signal.SIGKILL
        wait_for(lambda: run.reports)
        assert run.reports == ["worker.1 exited with code -9 (SIGKILL)"]
        assert survivor.poll() is None and alive(survivor.pid)
    assert not alive(survivor.pid)


def test_zero_replicas_start_nothing(tmp_path):
    with run_pattern(write_workers(tmp_path, 0)) as run:
        assert run.processes("worker") == []
        with pytest.raises(RunnerError, match="service 'worker' runs no replica"):
            run.port("worker")
    assert not any((tmp_path / "pids").iterdir())


def test_replica_logs_are_prefixed_with_their_number(tmp_path):
    say = {"build": ".", "command": "python -c 'print(\"ready\")'", "deploy": {"replicas": 2}}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump({"services": {"job": say}}))
    with run_pattern(tmp_path) as run:
        for process in run.processes("job"):
            process.wait(10)
        wait_for(lambda: len(run.logs("job").splitlines()) == 2)
        assert sorted(run.logs("job").splitlines()) == ["job.1 | ready", "job.2 | ready"]


def test_a_started_service_gets_its_entrypoint_command_and_interpolated_environment(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("GREETING=hello from .env\n")
    monkeypatch.setenv("FROM_SHELL", "shell value")
    monkeypatch.delenv("NOT_SET", raising=False)
    show = (
        "import os, sys; print(sys.argv[1:], os.environ['GREETING'], os.environ['FROM_SHELL'], 'NOT_SET' in os.environ)"
    )
    service = {
        "build": ".",
        "entrypoint": ["python", "-c", show],
        "command": "'two words' ${WHO:-nobody}",
        "environment": ["GREETING=${GREETING}", "FROM_SHELL", "NOT_SET"],
    }
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump({"services": {"show": service}}))
    with run_pattern(tmp_path) as run:
        run.processes("show")[0].wait(10)
        wait_for(lambda: run.logs("show"))
        assert run.logs("show") == "['two words', 'nobody'] hello from .env shell value False"


# HAProxy's own configuration, as a pattern writes it: its port and its backend's address from the environment.
HAPROXY_CFG = textwrap.dedent("""
    global
        log stdout format raw local0
    defaults
        mode http
        log global
        option httplog
        timeout connect 1s
        timeout client 5s
        timeout server 5s
    frontend web
        bind "${HOST}:${PORT}"
        default_backend app
    backend app
        server app1 "${APP_ADDRESS}"
""")


def test_a_haproxy_service_runs_the_machines_haproxy_on_the_mounted_configuration(tmp_path):
    """The compose file, used unchanged by Docker, mounts haproxy.cfg where the official image reads it; locally
    the runner starts Debian's haproxy on that file, with the app's compose address rewritten to its local one."""
    write_pattern(tmp_path)
    (tmp_path / "haproxy.cfg").write_text(HAPROXY_CFG)
    spec = yaml.safe_load((tmp_path / "docker-compose.yml").read_text())
    spec["services"]["proxy"] = {
        "image": "haproxy:2.6",
        "environment": {"HOST": "0.0.0.0", "PORT": "8080", "APP_ADDRESS": "app:8000"},
        "volumes": ["./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"],
        "ports": ["8080:8080"],
        "depends_on": {"app": {"condition": "service_healthy"}},
    }
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(spec))
    with run_pattern(tmp_path) as run:
        proxy = run.running["proxy"]
        assert proxy.service.command[:3] == ["haproxy", "-db", "-f"]
        assert httpx.get(run.url("proxy") + "/health").status_code == 200  # answered by app, through haproxy
        assert httpx.get(run.url("proxy") + "/nothing").status_code == 404
        deadline = time.monotonic() + 5
        while "GET /nothing" not in run.logs("proxy") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "GET /nothing" in run.logs("proxy")  # its log reaches the runner's output
        pid = proxy.process.pid
    assert not alive(pid)


def test_a_haproxy_service_needs_its_configuration_mounted(tmp_path):
    service = {"image": "haproxy:2.6", "ports": ["8080:8080"]}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump({"services": {"proxy": service}}))
    with pytest.raises(ValueError, match=r"mount its configuration file \(or its directory\) .* at /usr/local/etc/hap"):
        load_services(tmp_path / "docker-compose.yml")
    service["volumes"] = ["./missing.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump({"services": {"proxy": service}}))
    with pytest.raises(ValueError, match=r"missing.cfg mounted at /usr/local/etc/haproxy/haproxy.cfg does not exist"):
        load_services(tmp_path / "docker-compose.yml")
    (tmp_path / "proxy").mkdir()
    (tmp_path / "proxy" / "haproxy.cfg").write_text(HAPROXY_CFG)
    service["volumes"] = ["./proxy:/usr/local/etc/haproxy:ro"]  # the directory, with the files the config names
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump({"services": {"proxy": service}}))
    [proxy] = load_services(tmp_path / "docker-compose.yml")
    assert proxy.command == ["haproxy", "-db", "-f", str(tmp_path / "proxy" / "haproxy.cfg")]
    service["command"] = ["haproxy", "-f", "/elsewhere.cfg"]
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump({"services": {"proxy": service}}))
    with pytest.raises(ValueError, match=r"'command' of a haproxy:2.6 image is not supported"):
        load_services(tmp_path / "docker-compose.yml")
