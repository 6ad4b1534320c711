"""model_db's bounds: list routes answer a page at a time, and a hung database is a 503 within the timeout."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from chapter2_training.model_db.app import create_app
from chapter2_training.model_db.settings import ModelDbSettings
from mlpatterns.registry import ModelRegistry
from mlpatterns.runner.backing import PostgresServer, free_port
from mlpatterns.runner.run import REPO_ROOT

TIMEOUT = 1.0


@pytest.fixture(scope="module")
def database():
    server = PostgresServer(free_port()).start()
    try:
        server.create_database("model_db", "model_db", "model_db")
        url = f"postgresql+psycopg2://model_db:model_db@127.0.0.1:{server.port}/model_db"
        migrate = [sys.executable, "-m", "chapter2_training.model_db.migrate"]
        env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(REPO_ROOT)}
        subprocess.run(migrate, cwd=REPO_ROOT, env=env, check=True, capture_output=True)
        yield server, url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(database):
    _, url = database
    app = create_app(ModelDbSettings(database_url=url, db_timeout_seconds=TIMEOUT, log_level="WARNING"))
    with TestClient(app, base_url="http://model-db") as client:
        yield client


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_list_routes_answer_a_page_at_a_time(api):
    project = api.post("/api/projects", json={"project_name": "paged"}).json()
    model = api.post("/api/models", json={"project_id": project["project_id"], "model_name": "m"}).json()
    versions = [f"v{i:03d}" for i in range(120)]
    for version in versions:
        api.post("/api/experiments", json={"model_id": model["model_id"], "model_version_id": version})
    route = f"/api/experiments/model-id/{model['model_id']}"

    def page(**query) -> list[str]:
        response = api.get(route, params=query)
        assert response.status_code == 200, response.text
        return [row["model_version_id"] for row in response.json()]

    assert page() == versions[:100]  # the default page: the oldest 100
    assert page(offset=100) == versions[100:]
    assert page(limit=10, offset=5) == versions[5:15]
    assert page(order="desc", limit=3) == ["v119", "v118", "v117"]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"order": "newest"}, {"page": 2}):
        response = api.get(route, params=bad)
        assert response.status_code == 422, (bad, response.text)
    assert len(api.get("/api/experiments/all", params={"limit": 1000}).json()) == 120


def test_the_registry_finds_the_newest_experiment_beyond_the_first_page(api, database):
    registry = ModelRegistry.__new__(ModelRegistry)
    registry.http = api  # the in-process app, through the registry client's own calls
    assert registry.latest_experiment("paged", "m")["model_version_id"] == "v119"


def test_a_hung_database_is_a_503_within_the_timeout_and_recovers(api, database):
    server, _ = database
    assert api.get("/v0.1/health").status_code == 200
    # The postmaster and every backend (each leads a process group of its own): nothing answers any more.
    hung = [server.process.pid, *children(server.process.pid)]
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    try:
        for method, path, body in [
            ("GET", "/v0.1/health", None),
            ("GET", "/api/projects/all", None),
            ("POST", "/api/projects", {"project_name": "while-hung"}),
        ]:
            start = time.monotonic()
            response = api.request(method, path, json=body)
            elapsed = time.monotonic() - start
            assert response.status_code == 503, response.text
            assert response.json() == {"detail": "the database is unavailable; try again later"}
            assert elapsed < 3 * TIMEOUT + 1, f"{method} {path} took {elapsed:.1f} s"
    finally:
        for pid in hung:
            os.kill(pid, signal.SIGCONT)
    assert api.get("/v0.1/health").status_code == 200  # the hung connections were dropped, new ones work
