"""End to end: PostgreSQL, the migration, the seeder, the API and three copies of the job, started by the local
runner as `make up` starts them (docker-compose.yml: 10,000 seeded rows, three jobs, a 5 s start delay).

Every row predicted exactly once, proved in the database: each row counts its predictions (prediction_count) and
names the run that made it (predicted_by); each run counts the rows its model predicted (batch_runs). And right:
each stored label is the iris model's own answer, computed here, and mostly the flower's known species.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psycopg2
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sklearn.datasets import load_iris
from sqlalchemy import create_engine

from chapter4_serving_patterns.batch_pattern.job import chunk_json
from chapter4_serving_patterns.batch_pattern.seed import iris, seed_rows
from chapter4_serving_patterns.batch_pattern.tables import metadata
from mlpatterns.dataplane import Answer
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.runner.backing import free_port
from mlpatterns.runner.run import REPO_ROOT

PATTERN = Path(__file__).parents[1]
PACKAGE = "chapter4_serving_patterns.batch_pattern"
ROWS = 10_000  # the compose seeder's SEED_ROWS
JOBS = 3  # the compose job's replicas
START_DELAY_SECONDS = 5  # the compose job's START_DELAY_SECONDS
MODEL = REPO_ROOT / "models" / "iris_svc"


@pytest.fixture(scope="module")
def api(pattern):
    return pattern.client("api")


def database_url(pattern) -> str:
    return f"postgresql+psycopg2://batch:batch@127.0.0.1:{pattern.port('postgres')}/batch"


def connect(pattern):
    return psycopg2.connect(database_url(pattern).replace("+psycopg2", ""))


def query(pattern, sql: str, *args) -> list[tuple]:
    with connect(pattern) as connection, connection.cursor() as cursor:
        cursor.execute(sql, args)
        rows = cursor.fetchall()
    connection.close()
    return rows


def run(pattern, module: str, *args: str) -> subprocess.CompletedProcess:
    """One of the pattern's commands, as compose or the CronJob runs it, against the running database."""
    env = dict(os.environ, DATABASE_URL=database_url(pattern), PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", f"{PACKAGE}.{module}", *args]
    result = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def predicted(pattern, api) -> dict:
    """Wait for the three jobs to predict the seeded table (they start 5 s after the seeding, then take ~1 s)."""
    deadline = time.monotonic() + 120
    while True:
        counts = api.get("/data/count").json()
        (finished,) = query(
            pattern, "SELECT count(DISTINCT job_name) FROM batch_runs WHERE finished_datetime IS NOT NULL"
        )
        if counts["unpredicted"] == 0 and finished[0] == JOBS:
            return counts
        assert time.monotonic() < deadline, f"not predicted within 120 s: {counts}, {finished[0]} jobs finished"
        time.sleep(0.2)


def assert_each_row_predicted_once(pattern, rows: int) -> None:
    """No row predicted twice, none missed: per row, and per run (the rows each run's model predicted)."""
    assert dict(query(pattern, "SELECT prediction_count, count(*) FROM items GROUP BY 1")) == {1: rows}
    runs = dict(query(pattern, "SELECT run_id, rows_predicted FROM batch_runs"))
    assert sum(runs.values()) == rows
    by_run = dict(query(pattern, "SELECT predicted_by, count(*) FROM items GROUP BY 1"))
    assert by_run == {run_id: n for run_id, n in runs.items() if n}


def test_the_iris_file_is_scikit_learns_iris():
    features, species = iris()
    dataset = load_iris()
    assert np.array_equal(features, dataset.data)
    assert list(species) == [dataset.target_names[t] for t in dataset.target]


def test_a_chunks_json_gives_back_every_float32_score_and_label_exactly():
    rng = np.random.default_rng(7)
    scores = np.concatenate(
        [
            rng.random((500, 3), dtype=np.float32),  # probabilities
            np.float32(rng.normal(0, 1e6, (100, 3))),  # decision scores of any size and sign
            np.float32([[1.0, 0.0, -0.0], [1e-38, 3.4e38, 1.17549435e-38], [np.nextafter(np.float32(1), 0)] * 3]),
        ]
    )
    classes = np.int64(rng.integers(0, 4, len(scores)))  # class 3 has no name: its label is "3"
    answer = Answer(scores, classes, "model", {0: "setosa", 1: 'say "hi"', 2: "naïve\\path"})
    ids = list(range(10**12, 10**12 + len(scores)))
    rows = json.loads(chunk_json(ids, answer))
    assert [row["id"] for row in rows] == ids
    assert np.array_equal(np.float32([row["prediction"] for row in rows]), scores)
    assert [row["label"] for row in rows] == answer.labels
    assert set(answer.labels) == {"setosa", 'say "hi"', "naïve\\path", "3"}


def test_the_table_is_seeded_once_from_the_real_iris_rows(pattern):
    rows = query(pattern, 'SELECT seed_index, "values", species FROM items ORDER BY seed_index')
    assert [row[0] for row in rows] == list(range(ROWS))
    features, species = iris()
    # The first 150 rows are the flowers as measured; the rest are their fixed-seed jittered copies.
    assert np.array_equal(np.float32([row[1] for row in rows[:150]]), np.float32(features))
    values, names = seed_rows(0, ROWS)
    assert np.array_equal(np.float32([row[1] for row in rows]), np.float32(values))
    assert [row[2] for row in rows] == names and [row[2] for row in rows[:150]] == list(species)
    assert Counter(names[:150]) == {"setosa": 50, "versicolor": 50, "virginica": 50}
    assert not np.array_equal(values[150:300], features)  # jittered, not repeated

    again = run(pattern, "seed", "--rows", str(ROWS))
    assert f"seeded 0 rows of {ROWS} wanted" in again.stderr + again.stdout
    assert query(pattern, "SELECT count(*) FROM items") == [(ROWS,)]


def test_three_concurrent_jobs_predict_every_row_exactly_once(pattern, predicted):
    assert predicted == {"all": ROWS, "predicted": ROWS, "unpredicted": 0}
    assert_each_row_predicted_once(pattern, ROWS)
    jobs = query(pattern, "SELECT job_name, sum(rows_predicted) FROM batch_runs GROUP BY 1 ORDER BY 2 DESC")
    assert len(jobs) == JOBS
    print(f"rows per job: {jobs}")  # how the three copies shared the table this time (-s shows it)


def test_every_stored_prediction_is_the_models_own(pattern, predicted):
    rows = query(pattern, 'SELECT "values", prediction, label, species, seed_index FROM items ORDER BY id')
    predictor = OnnxPredictor(MODEL / "model.onnx", MODEL / "labels.json").load()
    expected = predictor.predict(np.float32([row[0] for row in rows]))
    assert np.allclose([row[1] for row in rows], expected.scores, atol=1e-6)
    assert [row[2] for row in rows] == [predictor.label_of(index) for index in expected.classes]
    right = np.array([row[2] == row[3] for row in rows])
    real = np.array([row[4] < 150 for row in rows])
    assert right[real].mean() >= 0.9, right[real].mean()  # the flowers as measured (96%)
    assert right.mean() >= 0.9, right.mean()  # with the jittered copies (96%)


def test_the_jobs_waited_their_start_delay_and_stamped_the_rows(pattern, predicted):
    ((seeded, first_run),) = query(
        pattern, "SELECT (SELECT max(created_datetime) FROM items), (SELECT min(started_datetime) FROM batch_runs)"
    )
    assert (first_run - seeded).total_seconds() >= START_DELAY_SECONDS
    assert query(pattern, "SELECT count(*) FROM items WHERE updated_datetime <= created_datetime") == [(0,)]
    assert query(pattern, "SELECT count(*) FROM items WHERE predicted_datetime IS NULL") == [(0,)]


def test_the_api_pages_through_every_row(api, predicted):
    ids, after = [], 0
    while page := api.get("/data/all", params={"limit": 1000, "after_id": after}).json():
        assert len(page) <= 1000
        ids += [item["id"] for item in page]
        after = page[-1]["id"]
    assert ids == sorted(set(ids)) and len(ids) == ROWS
    assert api.get("/data/unpredicted").json() == []
    first = api.get("/data/predicted", params={"limit": 2}).json()
    assert [item["id"] for item in first] == ids[:2]
    item = first[0]
    assert item["values"] == [5.1, 3.5, 1.4, 0.2] and item["species"] == "setosa" and item["label"] == "setosa"
    assert len(item["prediction"]) == 3 and sum(item["prediction"]) == pytest.approx(1.0, abs=1e-5)
    assert item["prediction_count"] == 1
    runs = api.get("/runs", params={"limit": 1000}).json()
    assert item["predicted_by"] in {run["run_id"] for run in runs}
    assert [run["started_datetime"] for run in runs] == sorted((run["started_datetime"] for run in runs), reverse=True)
    for params in ({"limit": 0}, {"limit": 1001}, {"after_id": -1}, {"after_id": "x"}, {"page": 2}):
        assert api.get("/data/all", params=params).status_code == 422, params


def test_rows_added_later_are_predicted_by_the_next_run(pattern, api, predicted):
    added = run(pattern, "seed", "--rows", str(ROWS + 150))
    assert f"seeded 150 rows of {ROWS + 150} wanted" in added.stderr + added.stdout
    once = run(pattern, "job", "--once")  # the CronJob's run
    assert "rows predicted" in once.stderr + once.stdout
    assert api.get("/data/count").json() == {"all": ROWS + 150, "predicted": ROWS + 150, "unpredicted": 0}
    assert_each_row_predicted_once(pattern, ROWS + 150)


def test_a_row_locked_by_another_job_is_skipped_not_waited_for(pattern, predicted):
    run(pattern, "seed", "--rows", str(ROWS + 170))  # 20 more pending rows (after the 150 of the test above)
    holder = connect(pattern)  # another job, mid-chunk: it holds the first 10 pending rows
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT id FROM items WHERE prediction IS NULL ORDER BY id LIMIT 10 FOR UPDATE")
            locked = [row[0] for row in cursor.fetchall()]
        assert len(locked) == 10
        run(pattern, "job", "--once")  # returns while the rows are still locked: it did not wait for them
        pending = [row[0] for row in query(pattern, "SELECT id FROM items WHERE prediction IS NULL ORDER BY id")]
        assert pending == locked
    finally:
        holder.rollback()
        holder.close()
    run(pattern, "job", "--once")
    assert query(pattern, "SELECT count(*) FROM items WHERE prediction IS NULL") == [(0,)]
    assert_each_row_predicted_once(pattern, ROWS + 170)


def test_the_migrated_schema_matches_the_tables(pattern):
    engine = create_engine(database_url(pattern))
    try:
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    finally:
        engine.dispose()


def job_process(database_url: str, *args: str, **env: str) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=database_url, PYTHONPATH=str(REPO_ROOT), **env)
    command = [sys.executable, "-m", f"{PACKAGE}.job", *args]
    return subprocess.Popen(
        command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_a_waiting_job_beats_its_heartbeat_and_stops_at_once_on_sigterm(pattern, tmp_path):
    heartbeat = tmp_path / "job.heartbeat"
    job = job_process(
        database_url(pattern), START_DELAY_SECONDS="600", HEARTBEAT_PATH=str(heartbeat), HEARTBEAT_SECONDS="0.2"
    )
    try:
        output = ""
        while "waiting 600 s" not in output:  # its settings read and its model loaded
            line = job.stdout.readline()
            assert line, f"the job exited early: {output}"
            output += line
        assert heartbeat.exists()
        first = heartbeat.stat().st_mtime_ns
        deadline = time.monotonic() + 30
        while heartbeat.stat().st_mtime_ns == first:  # touched again while it waits (every 0.2 s)
            assert time.monotonic() < deadline, "the heartbeat was not touched again while the job waited"
            time.sleep(0.05)
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=60) == 0  # long before its 600 s start delay is over
    finally:
        job.kill()
        job.wait()
        job.stdout.close()


def test_a_run_once_without_its_database_fails_with_a_clear_line():
    unreachable = f"postgresql+psycopg2://batch:batch@127.0.0.1:{free_port()}/batch"
    job = job_process(unreachable, "--once", DB_TIMEOUT_SECONDS="2")
    output, _ = job.communicate(timeout=60)
    assert job.returncode == 1
    assert "ERROR __main__ [-]: run failed: (psycopg2.OperationalError) Connection refused" in output
