"""End to end: PostgreSQL, the one-shot migration and the API, started by the local runner as `make up` does.

Every test works on names of its own, so they share one running pattern and one database.
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import psycopg2
import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from chapter2_training.model_db.app import create_app
from chapter2_training.model_db.demo import demo
from chapter2_training.model_db.migrate import ALEMBIC_INI
from chapter2_training.model_db.settings import ModelDbSettings
from chapter2_training.model_db.tables import Base
from mlpatterns.demo import DemoClient
from mlpatterns.registry import ModelRegistry, RegistryError
from mlpatterns.runner.backing import free_port
from mlpatterns.runner.run import REPO_ROOT

PATTERN = Path(__file__).parents[1]
RACERS = 20


@pytest.fixture(scope="module")
def api(pattern):  # the test kit's: PATTERN started once for this module, with its own PostgreSQL
    return pattern.client("model_db")


def database_url(pattern, dbname: str = "model_db") -> str:
    return f"postgresql+psycopg2://model_db:model_db@127.0.0.1:{pattern.port('postgres')}/{dbname}"


def query(pattern, sql: str, *args, dbname: str = "model_db") -> list[tuple]:
    with psycopg2.connect(database_url(pattern, dbname).replace("+psycopg2", "")) as connection:
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchall()


def ok(response: httpx.Response) -> dict | list:
    assert response.status_code == 200, response.text
    return response.json()


def create_project(api, name: str, **fields) -> dict:
    return ok(api.post("/api/projects", json={"project_name": name, **fields}))


def create_model(api, project_id: str, name: str) -> dict:
    return ok(api.post("/api/models", json={"project_id": project_id, "model_name": name}))


def create_experiment(api, model_id: str, version: str = "v1", **fields) -> dict:
    return ok(api.post("/api/experiments", json={"model_id": model_id, "model_version_id": version, **fields}))


def race(pattern, send) -> list[httpx.Response]:
    """`send(client)` from RACERS threads at once, each on a connection of its own (so on both workers)."""
    barrier = threading.Barrier(RACERS)

    def one(_) -> httpx.Response:
        with httpx.Client(base_url=pattern.url("model_db"), timeout=30) as client:
            client.get("/v0.1/health")  # connected before the start line
            barrier.wait()
            return send(client)

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(one, range(RACERS)))


def ids(rows: list[dict], key: str) -> list[str]:
    return [row[key] for row in rows]


# -- the id chain and idempotent creates ----------------------------------------------------------------


def test_health(api):
    assert ok(api.get("/v0.1/health")) == {"health": "ok"}


def test_project_model_experiment_chain(api):
    project = create_project(api, "chain", description="the id chain")
    model = create_model(api, project["project_id"], "svc")
    experiment = create_experiment(
        api,
        model["model_id"],
        "svc-1",
        parameters={"C": 1.0},
        training_dataset="train.csv",
        validation_dataset="valid.csv",
        test_dataset="test.csv",
        evaluations={"acc": 0.9},
        artifact_file_paths={"model": "model.onnx"},
    )
    assert model["project_id"] == project["project_id"]
    assert experiment["model_id"] == model["model_id"]
    for row, key in [(project, "project_id"), (model, "model_id"), (experiment, "experiment_id")]:
        assert len(row[key]) == 32 and int(row[key], 16) >= 0  # a whole uuid4, in hex
        assert datetime.fromisoformat(row["created_datetime"]).tzinfo is not None
    assert ok(api.get(f"/api/projects/id/{project['project_id']}")) == project
    assert ok(api.get(f"/api/models/id/{model['model_id']}")) == model
    assert ok(api.get(f"/api/experiments/id/{experiment['experiment_id']}")) == experiment
    assert experiment | {"experiment_id": None, "created_datetime": None, "model_id": None} == {
        "experiment_id": None,
        "model_id": None,
        "model_version_id": "svc-1",
        "parameters": {"C": 1.0},
        "training_dataset": "train.csv",
        "validation_dataset": "valid.csv",
        "test_dataset": "test.csv",
        "evaluations": {"acc": 0.9},
        "artifact_file_paths": {"model": "model.onnx"},
        "created_datetime": None,
    }


def test_creates_are_idempotent_on_the_name(api):
    first = create_project(api, "idempotent", description="first")
    again = create_project(api, "idempotent", description="second")
    assert again == first  # the same row, its description unchanged
    model = create_model(api, first["project_id"], "svc")
    assert create_model(api, first["project_id"], "svc") == model
    other_project = create_project(api, "idempotent-2")
    assert create_model(api, other_project["project_id"], "svc")["model_id"] != model["model_id"]
    # Experiments are not idempotent: every run is recorded.
    assert create_experiment(api, model["model_id"]) != create_experiment(api, model["model_id"])


def test_racing_project_creates_make_one_row(pattern):
    responses = race(pattern, lambda client: client.post("/api/projects", json={"project_name": "race"}))
    assert [r.status_code for r in responses] == [200] * RACERS
    assert len({r.json()["project_id"] for r in responses}) == 1
    assert query(pattern, "SELECT count(*) FROM projects WHERE project_name = %s", "race") == [(1,)]


def test_racing_model_creates_make_one_row(pattern, api):
    project_id = create_project(api, "model-race")["project_id"]
    body = {"project_id": project_id, "model_name": "svc"}
    responses = race(pattern, lambda client: client.post("/api/models", json=body))
    assert [r.status_code for r in responses] == [200] * RACERS
    assert len({r.json()["model_id"] for r in responses}) == 1
    assert query(pattern, "SELECT count(*) FROM models WHERE project_id = %s", project_id) == [(1,)]


# -- merges ----------------------------------------------------------------------------------------------


def test_merges_add_keys_and_persist(api):
    project = create_project(api, "merge")
    experiment_id = create_experiment(api, create_model(api, project["project_id"], "svc")["model_id"])["experiment_id"]
    evaluations = f"/api/experiments/evaluations/{experiment_id}"
    paths = f"/api/experiments/artifact-file-paths/{experiment_id}"
    assert ok(api.post(evaluations, json={"evaluations": {"acc": 0.9}}))["evaluations"] == {"acc": 0.9}
    assert ok(api.post(evaluations, json={"evaluations": {"f1": 0.8}}))["evaluations"] == {"acc": 0.9, "f1": 0.8}
    assert ok(api.post(evaluations, json={"evaluations": {"acc": 0.95}}))["evaluations"] == {"acc": 0.95, "f1": 0.8}
    ok(api.post(paths, json={"artifact_file_paths": {"model": "m.onnx"}}))
    ok(api.post(paths, json={"artifact_file_paths": {"labels": "labels.json"}}))
    stored = ok(api.get(f"/api/experiments/id/{experiment_id}"))  # read back: the merges were committed
    assert stored["evaluations"] == {"acc": 0.95, "f1": 0.8}
    assert stored["artifact_file_paths"] == {"model": "m.onnx", "labels": "labels.json"}


def test_concurrent_merges_of_different_keys_all_persist(pattern, api):
    project = create_project(api, "merge-race")
    experiment = create_experiment(
        api, create_model(api, project["project_id"], "svc")["model_id"], evaluations={"kept": True}
    )
    experiment_id = experiment["experiment_id"]
    counter = iter(range(RACERS))
    lock = threading.Lock()

    def merge(client: httpx.Client) -> httpx.Response:
        with lock:
            i = next(counter)
        if i % 2:
            return client.post(f"/api/experiments/evaluations/{experiment_id}", json={"evaluations": {f"k{i}": i}})
        path = f"/api/experiments/artifact-file-paths/{experiment_id}"
        return client.post(path, json={"artifact_file_paths": {f"k{i}": f"p{i}"}})

    assert [r.status_code for r in race(pattern, merge)] == [200] * RACERS
    stored = ok(api.get(f"/api/experiments/id/{experiment_id}"))
    assert stored["evaluations"] == {"kept": True} | {f"k{i}": i for i in range(1, RACERS, 2)}
    assert stored["artifact_file_paths"] == {f"k{i}": f"p{i}" for i in range(0, RACERS, 2)}


# -- lookups ---------------------------------------------------------------------------------------------


def test_every_lookup_route(api):
    project = create_project(api, "team/lookups")  # a `/` in a name works in the name routes
    other = create_project(api, "lookups-other")
    svc = create_model(api, project["project_id"], "lookup-svc")
    rf = create_model(api, project["project_id"], "lookup-rf")
    svc_elsewhere = create_model(api, other["project_id"], "lookup-svc")
    first = create_experiment(api, svc["model_id"], "lookup-svc-1")
    second = create_experiment(api, svc["model_id"], "lookup-svc-1")
    third = create_experiment(api, rf["model_id"], "lookup-rf-1")
    create_experiment(api, svc_elsewhere["model_id"], "lookup-elsewhere-1")

    assert ok(api.get("/api/projects/name/team/lookups")) == project
    assert ok(api.get("/api/projects/name/team%2Flookups")) == project
    assert {project["project_id"], other["project_id"]} <= set(ids(ok(api.get("/api/projects/all")), "project_id"))
    assert ids(ok(api.get(f"/api/models/project-id/{project['project_id']}")), "model_id") == [
        svc["model_id"],
        rf["model_id"],
    ]
    assert ok(api.get("/api/models/project-name/team/lookups")) == [svc, rf]
    assert ok(api.get("/api/models/project-name/lookups-other")) == [svc_elsewhere]
    assert ok(api.get("/api/models/name/lookup-svc")) == [svc, svc_elsewhere]  # every project's
    assert ok(api.get("/api/models/name/no-such-model")) == []
    assert {svc["model_id"], rf["model_id"]} <= set(ids(ok(api.get("/api/models/all")), "model_id"))
    assert ok(api.get(f"/api/experiments/model-id/{svc['model_id']}")) == [first, second]
    assert ok(api.get("/api/experiments/model-version-id/lookup-svc-1")) == first  # the first recorded
    assert ok(api.get(f"/api/experiments/project-id/{project['project_id']}")) == [first, second, third]
    everything = ids(ok(api.get("/api/experiments/all")), "experiment_id")
    assert {first["experiment_id"], third["experiment_id"]} <= set(everything)


# -- errors: 404 for what does not exist, 422 for bad bodies, never a 500 ---------------------------------
# (what every service must refuse, malformed JSON, wrong types, missing fields, NaN, oversized bodies, is
# tests/test_bad_input.py; here what is this service's own: its lengths, NUL, surrogates, nesting, extra keys)


@pytest.mark.parametrize(
    "method, path, body, detail",
    [
        ("GET", "/api/projects/id/nope", None, "project 'nope' not found"),
        ("GET", "/api/projects/name/nope", None, "no project named 'nope'"),
        ("GET", "/api/models/id/nope", None, "model 'nope' not found"),
        ("GET", "/api/models/project-id/nope", None, "project 'nope' not found"),
        ("GET", "/api/models/project-name/nope", None, "no project named 'nope'"),
        ("GET", "/api/experiments/id/nope", None, "experiment 'nope' not found"),
        ("GET", "/api/experiments/model-version-id/nope", None, "no experiment with model_version_id 'nope'"),
        ("GET", "/api/experiments/model-id/nope", None, "model 'nope' not found"),
        ("GET", "/api/experiments/project-id/nope", None, "project 'nope' not found"),
        ("POST", "/api/experiments/evaluations/nope", {"evaluations": {"acc": 1}}, "experiment 'nope' not found"),
        (
            "POST",
            "/api/experiments/artifact-file-paths/nope",
            {"artifact_file_paths": {}},
            "experiment 'nope' not found",
        ),
        ("POST", "/api/models", {"project_id": "nope", "model_name": "svc"}, "project 'nope' not found"),
        ("POST", "/api/experiments", {"model_id": "nope", "model_version_id": "v1"}, "model 'nope' not found"),
    ],
)
def test_unknown_ids_are_404(api, method, path, body, detail):
    response = api.request(method, path, json=body)
    assert response.status_code == 404
    assert response.json() == {"detail": detail}


DEEP = {"a": 1}
for _ in range(40):
    DEEP = {"a": DEEP}


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/api/projects", {"project_name": ""}, "at least 1 character"),
        ("/api/projects", {"project_name": "x" * 256}, "at most 255 characters"),
        ("/api/projects", {"project_name": "a\u0000b"}, "NUL"),
        ("/api/projects", {"project_name": "a\ud800b"}, "valid string"),  # an unpaired surrogate
        ("/api/projects", {"project_name": "x", "owner": "me"}, "Extra inputs are not permitted"),
        ("/api/experiments", '{"model_id": "m", "model_version_id": "v", "parameters": {"lr": NaN}}', "NaN"),
        ("/api/experiments", {"model_id": "m", "model_version_id": "v", "evaluations": {"a": "\u0000"}}, "NUL"),
        ("/api/experiments", {"model_id": "m", "model_version_id": "v", "evaluations": {"\ud800": 1}}, "surrogate"),
        ("/api/experiments", {"model_id": "m", "model_version_id": "v", "parameters": DEEP}, "nested deeper than 32"),
        ("/api/experiments/evaluations/x", {"evaluations": {"acc": 0.9}, "f1": 0.8}, "Extra inputs are not permitted"),
    ],
)
def test_bad_bodies_are_422(api, path, body, message):
    content = body if isinstance(body, str) else json.dumps(body)
    response = api.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert message in json.dumps(response.json()["detail"], ensure_ascii=False)


@pytest.mark.parametrize(
    "path, status",
    [
        ("/api/projects/id/a%00b", 422),  # PostgreSQL cannot store NUL: refused before it gets there
        ("/api/models/name/a%00b", 422),
        ("/api/projects/id/" + "x" * 256, 422),
        ("/api/projects/id/%ED%A0%80", 404),  # not UTF-8: the server decodes it to U+FFFD, which is not an id
    ],
)
def test_odd_path_ids_are_4xx(api, path, status):
    assert api.get(path).status_code == status


def test_database_down_is_503_not_500():
    closed = f"postgresql+psycopg2://model_db:model_db@127.0.0.1:{free_port()}/model_db"
    app = create_app(ModelDbSettings(database_url=closed, log_level="WARNING"))

    async def requests() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://model-db") as client:
            return [await client.get("/v0.1/health"), await client.post("/api/projects", json={"project_name": "x"})]

    for response in asyncio.run(requests()):
        assert response.status_code == 503
        assert response.json() == {"detail": "the database is unavailable; try again later"}


# -- migrations: applied once, by the one-shot service; again is a no-op; racing migrators are safe ---------


def migrate(pattern, dbname: str = "model_db") -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url(pattern, dbname), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "chapter2_training.model_db.migrate"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def head() -> str:
    return ScriptDirectory.from_config(Config(ALEMBIC_INI)).get_current_head()


def test_schema_is_at_head_and_matches_the_tables(pattern):
    assert query(pattern, "SELECT version_num FROM alembic_version") == [(head(),)]
    engine = create_engine(database_url(pattern))
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_migrating_again_changes_nothing(pattern, api):
    create_project(api, "survives-migrate")
    process = migrate(pattern)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert "Running upgrade" not in output
    assert f"is at revision {head()}" in output
    assert query(pattern, "SELECT version_num FROM alembic_version") == [(head(),)]
    assert ok(api.get("/api/projects/name/survives-migrate"))["project_name"] == "survives-migrate"


def test_racing_migrators_on_a_new_database_apply_it_once(pattern):
    admin = psycopg2.connect(host="127.0.0.1", port=pattern.port("postgres"), user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute("CREATE DATABASE racing_migrations OWNER model_db")
    admin.close()
    processes = [migrate(pattern, "racing_migrations") for _ in range(3)]
    outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    assert sum("Running upgrade" in output for output in outputs) == 1
    assert query(pattern, "SELECT version_num FROM alembic_version", dbname="racing_migrations") == [(head(),)]


# -- the client and the demo -------------------------------------------------------------------------------


def test_registry_client(pattern, api):
    with ModelRegistry(pattern.url("model_db")) as registry:
        project_id = registry.ensure_project("registry", "from the client")
        assert registry.ensure_project("registry") == project_id
        model_id = registry.ensure_model(project_id, "svc")
        assert registry.ensure_model(project_id, "svc") == model_id
        experiment_id = registry.add_experiment(model_id, "svc-1", parameters={"C": 1.0})
        assert registry.merge_evaluations(experiment_id, {"acc": 0.9}) == {"acc": 0.9}
        assert registry.merge_evaluations(experiment_id, {"f1": 0.8}) == {"acc": 0.9, "f1": 0.8}
        assert registry.merge_artifact_paths(experiment_id, {"model": "m.onnx"}) == {"model": "m.onnx"}
        with pytest.raises(RegistryError) as error:
            registry.ensure_model("nope", "svc")
        assert (error.value.status_code, error.value.detail) == (404, "project 'nope' not found")
    stored = ok(api.get(f"/api/experiments/id/{experiment_id}"))
    assert stored["parameters"] == {"C": 1.0} and stored["evaluations"] == {"acc": 0.9, "f1": 0.8}


def test_demo_gets_no_server_error(pattern, api):
    client = DemoClient({"model_db": pattern.url("model_db")})
    try:
        demo(client)
    finally:
        client.close()
    assert client.server_errors == 0
    stored = ok(api.get("/api/experiments/model-version-id/iris_svc_0.1.0"))
    assert stored["evaluations"] == {"accuracy": 0.97, "f1": 0.96}


# -- settings --------------------------------------------------------------------------------------------


def test_settings_database_url_then_the_original_postgres_variables(monkeypatch):
    def url() -> str:
        return ModelDbSettings().url.render_as_string(hide_password=False)

    original = {
        "POSTGRES_USER": "user",
        "POSTGRES_PASSWORD": "p@ss",
        "POSTGRES_SERVER": "db",
        "POSTGRES_PORT": "6543",
        "POSTGRES_DB": "registry",
    }
    for name in ["DATABASE_URL", *original]:
        monkeypatch.delenv(name, raising=False)
    assert url() == "postgresql+psycopg2://model_db:model_db@127.0.0.1:5432/model_db"  # the local default
    for name, value in original.items():
        monkeypatch.setenv(name, value)
    assert url() == "postgresql+psycopg2://user:p%40ss@db:6543/registry"
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://a:b@elsewhere:5432/c")
    assert url() == "postgresql+psycopg2://a:b@elsewhere:5432/c"
