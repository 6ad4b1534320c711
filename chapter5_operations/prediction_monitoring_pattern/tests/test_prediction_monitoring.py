"""End to end: PostgreSQL, the migration, the API, the monitor and the load job, started by the local runner from
docker-compose.yml, with the load job sending its whole stream (3,000 rows, drift planted in blocks 2, 5 and 7)
as fast as it is answered, and the scheduled monitor held back (a check an hour) so that the test drives the
monitor's clock itself: it checks each block's window at the moment the block ended, as the scheduled monitor
would have at the time.
"""

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import psycopg2
import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from PIL import Image

from chapter5_operations.prediction_monitoring_pattern.app import create_app
from chapter5_operations.prediction_monitoring_pattern.load import (
    parse_plan,
    request_id,
    stream,
    training_rows,
    wait_for_api,
)
from chapter5_operations.prediction_monitoring_pattern.settings import REFERENCE_PATH, ApiSettings, LoadSettings
from chapter5_operations.prediction_monitoring_pattern.store import RecordWriter, window_source
from chapter5_operations.prediction_monitoring_pattern.tables import metadata
from mlpatterns.dataplane import Answer
from mlpatterns.db import create_db_engine
from mlpatterns.drift import Monitor, Reference, Thresholds
from mlpatterns.outlier import PredictionEvent
from mlpatterns.runner.backing import free_port
from mlpatterns.runner.run import REPO_ROOT
from mlpatterns.testing import assert_healthy, assert_refused, start_pattern

PATTERN = Path(__file__).parents[1]
PACKAGE = "chapter5_operations.prediction_monitoring_pattern"
BLOCKS, BLOCK_ROWS = 10, 300  # the compose load job's
ROWS = BLOCKS * BLOCK_ROWS
PLANTED = {2, 5, 7}  # the compose load job's DRIFT_PLAN
FAST_LOAD = {"RATE_PER_SECOND": "0", "REPEAT": "false"}


@pytest.fixture(scope="module")
def pattern():
    overrides = {"load": FAST_LOAD, "monitor": {"INTERVAL_SECONDS": "3600"}}
    with start_pattern(PATTERN, overrides=overrides) as started:
        yield started


def database_url(pattern) -> str:
    return f"postgresql+psycopg2://monitor:monitor@127.0.0.1:{pattern.port('postgres')}/monitor"


def query(pattern, sql: str, *args) -> list[tuple]:
    connection = psycopg2.connect(database_url(pattern).replace("+psycopg2", ""))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(sql, args or None)
            return cursor.fetchall()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def engine(pattern):
    engine = create_db_engine(database_url(pattern))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def replayed(pattern) -> dict[int, float]:
    """Wait for the load job's stream to be stored; each stream row's answer time, by its index."""
    deadline = time.monotonic() + 120
    while True:
        rows = query(pattern, "SELECT log_id, created_datetime FROM prediction_log WHERE log_id LIKE 'load-%'")
        if len(rows) >= ROWS:
            break
        assert time.monotonic() < deadline, f"{len(rows)} of {ROWS} stream rows stored within 120 s"
        time.sleep(0.5)
    seed = LoadSettings().seed
    times = {int(log_id.rsplit("-", 1)[1]): created.timestamp() for log_id, created in rows}
    assert sorted(times) == list(range(ROWS)) and all(log_id.startswith(f"load-{seed}-") for log_id, _ in rows)
    return times


def block_window(times: dict[int, float], block: int) -> tuple[float, float]:
    """From the answer to the block's first row to the answer to the next block's first (the rows were sent one
    after another on one connection, so the answers come in stream order)."""
    start = times[block * BLOCK_ROWS]
    end = times[(block + 1) * BLOCK_ROWS] if block + 1 < BLOCKS else times[ROWS - 1] + 1e-3
    return start, end


def test_the_schema_is_the_migration(engine):
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []


# The tests that store records of their own wait for the load's stream first (`replayed`): a record stored while
# the stream runs would fall into one of its blocks' windows, which the monitor test counts row by row.
def test_a_request_is_stored_in_both_tables_under_its_id(pattern, replayed):
    api = pattern.client("api")
    response = api.post(
        "/predict", json={"data": [[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4]]}, headers={"X-Request-ID": "r-1"}
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["job_id"] == "r-1" and answer["is_outlier"] == [False, True]
    deadline = time.monotonic() + 10
    while not (
        rows := query(
            pattern,
            "SELECT p.log, p.rows, o.log, o.outliers, o.rows, p.created_datetime = "
            "o.created_datetime FROM prediction_log p JOIN outlier_log o USING (log_id) "
            "WHERE log_id = 'r-1'",
        )
    ):
        assert time.monotonic() < deadline, "the request was not stored within 10 s"
        time.sleep(0.1)
    ((prediction, rows_p, outlier, outliers, rows_o, same_time),) = rows
    assert prediction["data"] == outlier["data"] == [[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4]]
    assert prediction["endpoint"] == "/predict" and np.allclose(prediction["prediction"], answer["prediction"])
    assert outlier["is_outlier"] == [False, True] and outlier["outlier_score"] == pytest.approx(answer["outlier_score"])
    assert (rows_p, outliers, rows_o, same_time) == (2, 1, 2, True)


def event(log_id: str, outlier_score: float) -> PredictionEvent:
    answer = Answer(np.array([[0.9, 0.05, 0.05]]), np.array([0]), "iris_svc")
    answer = answer.with_extra(is_outlier=np.array([False]), outlier_score=np.array([outlier_score]))
    return PredictionEvent("/predict", log_id, time.time(), [[5.1, 3.5, 1.4, 0.2]], answer, 0.001, "v1", "iris_ocs")


def test_a_record_is_stored_whole_or_not_at_all(pattern, engine, replayed):
    """One transaction per request: when the second row (outlier_log) cannot be written, the first is not kept."""
    writer = RecordWriter(engine)
    assert writer.write(event("whole", 0.5)) is True
    # PostgreSQL's JSON has no NaN: the outlier row fails after the prediction row went in, in the same transaction.
    assert writer.write(event("half", float("nan"))) is False
    assert writer.write(event("whole", 0.5)) is False  # a request id is stored once
    counts = (
        "SELECT (SELECT count(*) FROM prediction_log WHERE log_id = %s), "
        "(SELECT count(*) FROM outlier_log WHERE log_id = %s)"
    )
    assert query(pattern, counts, "whole", "whole") == [(1, 1)]
    assert query(pattern, counts, "half", "half") == [(0, 0)]


def test_refused_requests_and_test_routes_are_not_stored(pattern, replayed):
    api = pattern.client("api")
    assert_refused(api.post("/predict", json={"data": [[1, 2, 3]]}, headers={"X-Request-ID": "bad-1"}), 422)
    assert api.get("/predict/test", headers={"X-Request-ID": "test-1"}).status_code == 200
    assert api.post("/predict/label", json={"data": [[7.7, 3.0, 6.1, 2.3]]}, headers={"X-Request-ID": "after"}).json()[
        "prediction"
    ] == ["virginica"]
    deadline = time.monotonic() + 10
    while not query(pattern, "SELECT 1 FROM outlier_log WHERE log_id = 'after'"):  # stored after the other two
        assert time.monotonic() < deadline, "the request was not stored within 10 s"
        time.sleep(0.1)
    assert query(pattern, "SELECT log_id FROM prediction_log WHERE log_id IN ('bad-1', 'test-1')") == []
    assert query(pattern, "SELECT log->>'endpoint' FROM prediction_log WHERE log_id = 'after'") == [("/predict/label",)]


def test_the_stored_stream_is_the_generated_one(pattern, replayed):
    settings = LoadSettings()
    expected = stream(training_rows(), BLOCKS, BLOCK_ROWS, parse_plan(settings.drift_plan), settings.seed)
    stored = dict(query(pattern, "SELECT log_id, log->'data'->0 FROM prediction_log WHERE log_id LIKE 'load-%'"))
    assert np.array_equal(np.array([stored[request_id(settings.seed, i)] for i in range(ROWS)]), expected)
    assert query(pattern, "SELECT count(*) FROM outlier_log WHERE log_id LIKE 'load-%'") == [(ROWS,)]


def test_the_monitor_flags_every_planted_window_and_no_clean_one(engine, replayed):
    reference = Reference.load(REFERENCE_PATH)
    found = {}
    for block in range(BLOCKS):
        start, end = block_window(replayed, block)
        monitor = Monitor(
            window_source(engine), reference, Thresholds(), window_seconds=end - start, clock=lambda end=end: end
        )
        summary = monitor.check()
        assert summary.rows == BLOCK_ROWS, f"block {block}: {summary.rows} rows in its window"
        found[block] = {(alert.check, alert.feature) for alert in summary.alerts}
    assert {block for block, alerts in found.items() if alerts} == PLANTED, found
    # Each planted change is seen for what it is: every feature 10 % up; 40 % outliers; the petals 8 % down.
    assert {("mean", feature) for feature in reference.features} <= found[2]
    assert ("psi", "sepal_length") in found[2]
    assert ("outlier_rate", None) in found[5]
    assert {("mean", "petal_length"), ("mean", "petal_width"), ("psi", "petal_length")} <= found[7]
    assert not {("mean", "sepal_length"), ("mean", "sepal_width")} & found[7]


def run_monitor(pattern, at: float, window: float) -> subprocess.CompletedProcess:
    """The monitor's own process, once, on the clock given by --at (as a CronJob's run, at another time)."""
    env = dict(os.environ, DATABASE_URL=database_url(pattern), PYTHONPATH=str(REPO_ROOT), WINDOW_SECONDS=str(window))
    command = [
        sys.executable,
        "-m",
        f"{PACKAGE}.monitor",
        "--once",
        "--at",
        datetime.fromtimestamp(at, UTC).isoformat(),
    ]
    result = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_an_alert_is_a_log_line_an_entry_and_a_metric(pattern, replayed):
    api = pattern.client("api")
    start, end = block_window(replayed, 5)
    result = run_monitor(pattern, end, end - start)
    output = result.stdout + result.stderr
    assert "ERROR" in output and "outlier_rate out of threshold: +0.4" in output
    since = datetime.fromtimestamp(end - 1e-3, UTC).isoformat()
    alerts = [a for a in api.get("/alerts", params={"since": since}).json() if a["check"] == "outlier_rate"]
    assert len(alerts) == 1
    (alert,) = alerts
    assert alert["value"] == pytest.approx(0.4, abs=0.1) and alert["threshold"] == pytest.approx(0.2)
    assert alert["rows"] == BLOCK_ROWS and alert["message"].startswith("outlier_rate out of threshold")
    assert datetime.fromisoformat(alert["window_end"]).timestamp() == pytest.approx(end, abs=1e-5)
    metrics = api.get("/metrics").text
    assert 'prediction_monitor_alerts_total{check="outlier_rate",feature=""} ' in metrics

    clean_start, clean_end = block_window(replayed, 4)
    before = len(api.get("/alerts").json())
    clean = run_monitor(pattern, clean_end, clean_end - clean_start)
    assert "ERROR" not in clean.stdout + clean.stderr and "window of 300 rows" in clean.stdout + clean.stderr
    assert len(api.get("/alerts").json()) == before


def test_alerts_refuses_a_bad_query(pattern):
    api = pattern.client("api")
    assert_refused(api.get("/alerts", params={"limit": 0}), 422, "greater than or equal to 1")
    assert_refused(api.get("/alerts", params={"since": "yesterday"}), 422, "since: expected an ISO 8601 time")
    assert_refused(api.get("/alerts", params={"since": "0.5"}), 422, "got '0.5'")
    assert api.get("/alerts", params={"since": "0157-03-08T11:56:10+20:02"}).status_code == 200
    assert_healthy(api)


def test_the_load_job_refuses_a_bad_plan():
    for plan, message in [
        ("x:all*1.1", "expected block:change"),
        ("2:colour*1.1", "unknown feature 'colour'"),
        ("2:outliers=1.5", "an outlier share is between 0 and 1"),
        ("2:all/1.1", "cannot read 'all/1.1'"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
            parse_plan(plan)
    assert parse_plan("7:petal_length*0.92+petal_width*0.92")[7].factors == (1.0, 1.0, 0.92, 0.92)


def test_the_load_job_waits_for_the_api_and_gives_up_naming_it(pattern):
    with httpx.Client(timeout=2.0) as client:
        wait_for_api(client, LoadSettings(target_url=pattern.url("api") + "/predict", api_wait_seconds=0))  # up
        settings = LoadSettings(target_url=f"http://127.0.0.1:{free_port()}/predict", api_wait_seconds=0)
        with pytest.raises(SystemExit, match=r"/health did not answer 200 within 0 s"):
            wait_for_api(client, settings)


def test_the_reference_is_the_training_data():
    from chapter5_operations.prediction_monitoring_pattern.reference import build, dumps

    assert REFERENCE_PATH.read_text() == dumps(build(REPO_ROOT / "models/iris_ocs/model.onnx"))


def test_the_series_shows_each_block_drift_as_stored(pattern, replayed):
    """GET /series (what the page draws): per bucket, the features' means and the outlier share of the stored rows."""
    api = pattern.client("api")
    answer = api.get("/series", params={"seconds": 3600, "bucket_seconds": 3600}).json()
    reference = Reference.load(REFERENCE_PATH)
    assert answer["features"] == list(reference.features)
    assert answer["reference_means"] == pytest.approx(list(reference.means))
    assert (answer["mean_threshold"], answer["outlier_threshold"]) == (0.05, 0.2)
    rows = sum(point["rows"] for point in answer["points"])
    (stored,) = query(pattern, "SELECT sum(rows) FROM prediction_log")
    assert rows == stored[0] >= ROWS
    assert api.get("/series", params={"seconds": 7200, "bucket_seconds": 1}).json()["bucket_seconds"] == 4
    assert_refused(api.get("/series", params={"bucket_seconds": 0}), 422, "greater than or equal to 1")


def test_the_page_is_served_whole(pattern):
    page = pattern.client("api").get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # Nothing from elsewhere: no script, style or font fetched from another host.
    assert "http://" not in page.text.replace('"http://www.w3.org/2000/svg"', "") and "https://" not in page.text
    assert "fetch(u)" in page.text and "`series?seconds=${SECONDS}&bucket_seconds=${BUCKET}`" in page.text


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Debian's chromium, headless, with a profile of its own (no sandbox as root: it refuses to start there)."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: `make setup` installs it (Debian's `chromium` package)")
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []
    # No calls home (update checks, sync, field trials): the page is all it may load, on a machine with no network.
    quiet = ["--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    command = [binary, "--headless", "--disable-gpu", *sandbox, *quiet, f"--user-data-dir={profile}"]
    command.append("--window-size=1280,1100")
    # The page fetches twice and draws: 5 s of virtual time is plenty, and no wall-clock wait.
    result = subprocess.run([*command, "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_the_page_draws_the_features_and_the_alerts_in_a_browser(pattern, replayed, tmp_path):
    for block in sorted(PLANTED):  # the monitor's alerts of the planted windows, as the scheduled checks raise them
        start, end = block_window(replayed, block)
        run_monitor(pattern, end, end - start)
    url = pattern.url("api") + "/dashboard?seconds=600&bucket_seconds=1"
    dom = chromium("--dump-dom", url, profile=tmp_path / "dom").stdout
    assert dom.count("<figure data-chart=") == 5, dom[:3000]
    for name in ("sepal_length", "sepal_width", "petal_length", "petal_width", "outlier rate"):
        assert f'<figure data-chart="{name}' in dom
    assert dom.count('class="alertdot"') >= 3 and 'class="line"' in dom  # block 2, 5 and 7 marked at least
    assert "outlier_rate out of threshold" in dom  # an alert marker's tooltip and the alerts table
    shot = tmp_path / "dashboard.png"
    chromium(f"--screenshot={shot}", url, profile=tmp_path / "shot")
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in pixels[:: max(1, len(pixels) // 200_000)]}
    assert len(colours) > 50, f"a blank page: {len(colours)} colours"
    red = np.all(np.abs(pixels.astype(int) - (221, 34, 34)) < 30, axis=1).sum()  # the alerts
    blue = np.all(np.abs(pixels.astype(int) - (31, 95, 191)) < 30, axis=1).sum()  # the means over time
    assert red > 100 and blue > 100, f"red {red}, blue {blue} pixels"


def test_store_records_off_serves_the_same_api_and_stores_nothing(pattern):
    """The bench's other side. In-process; leaving the `with` runs the app's shutdown, which writes out its queue."""
    models = REPO_ROOT / "models"
    for store, log_id in ((False, "unstored"), (True, "stored-in-process")):
        settings = ApiSettings(
            database_url=database_url(pattern),
            store_records=store,
            model_path=models / "iris_svc" / "model.onnx",
            outlier_model_path=models / "iris_ocs" / "model.onnx",
        )
        with TestClient(create_app(settings)) as client:
            answer = client.post("/predict", json={"data": [[1, 2, 3, 4]]}, headers={"X-Request-ID": log_id}).json()
        assert answer["job_id"] == log_id and answer["is_outlier"] == [True]
        stored = query(pattern, "SELECT count(*) FROM outlier_log WHERE log_id = %s", log_id)
        assert stored == [(1 if store else 0,)]


def test_the_page_draws_the_thresholds_the_monitor_checks_in_compose_and_in_kubernetes():
    names = ("MEAN_THRESHOLD", "PSI_THRESHOLD", "OUTLIER_THRESHOLD")
    services = yaml.safe_load((PATTERN / "docker-compose.yml").read_text())["services"]
    compose = {name: {key: services[name]["environment"][key] for key in names} for name in ("api", "monitor")}
    assert compose["api"] == compose["monitor"]

    def env(path: str, kind: str) -> dict:
        document = yaml.safe_load((PATTERN / "manifests" / path).read_text())
        spec = document["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else document["spec"]
        container = spec["template"]["spec"]["containers"][0]
        return {item["name"]: item["value"] for item in container["env"] if item["name"] in names}

    assert env("deployment.yml", "Deployment") == env("monitor.yml", "CronJob") == compose["monitor"]
