"""End to end: the prediction log pattern started by the local runner (2 gunicorn workers, the shipper's stand-in).

Records are read from the file as the shipper reads it (shipper.Tail: from its own saved position, whole lines
only), in a position DB of the test's own; the running shipper's output is checked too. The API's exact messages
and its routes' bad-input table are asserted in mlpatterns/tests/test_outlier.py and tests/test_bad_input.py.
"""

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from chapter5_operations.prediction_log_pattern.shipper import Tail, TailConfig
from mlpatterns.testing import assert_healthy, assert_refused, start_pattern

PATTERN = Path(__file__).parents[1]
SETOSA = [5.1, 3.5, 1.4, 0.2]
ODD = [1.0, 2.0, 3.0, 4.0]
ROWS = [SETOSA, ODD, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def log_path(started) -> Path:
    """The API's LOG_PATH in this run (compose's x-local value, `{run_dir}` filled in)."""
    value = started.run.running["api"].service.environment["LOG_PATH"]
    return Path(value.replace("{run_dir}", started.run.run_dir))


def reader(started, tmp_path: Path, pattern: str = "") -> Tail:
    """A tail of the API's file (with `pattern` "*": of the file it was rotated to as well), as the shipper's."""
    path = Path(str(log_path(started)) + pattern)
    return Tail(TailConfig(path, tmp_path / "position.db", True, 4 * 1024**2, True, _PARSER))


_PARSER = {"name": "prediction_json", "format": "json", "time_key": "time", "time_format": "%Y-%m-%dT%H:%M:%S.%LZ"}


def records_for(tail: Tail, ids: set[str], until: str | None = None, timeout: float = 20.0) -> dict[str, list[dict]]:
    """Every record of these request ids, read until each has one, or the record of `until` is read (or the
    timeout); records of other requests (earlier tests') are passed over."""
    found: dict[str, list[dict]] = {}
    deadline = time.monotonic() + timeout
    while True:
        for record in tail.records():
            if record["request_id"] in ids:
                found.setdefault(record["request_id"], []).append(record)
        if len(found) == len(ids) or until in found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


async def predict_concurrently(url: str, bodies: list[dict], connections: int = 64) -> list[httpx.Response]:
    """Every body POSTed to /predict, `connections` requests in flight at once."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    slots = asyncio.Semaphore(connections)  # a few waiting on httpx's pool, not thousands (it slows to a crawl)

    async def post(client: httpx.AsyncClient, body: dict) -> httpx.Response:
        async with slots:
            return await client.post("/predict", json=body)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        return await asyncio.gather(*(post(client, body) for body in bodies))


def test_the_book_examples_answer_every_row(pattern):
    api = pattern.client("api")
    answer = api.post("/predict", json={"data": [SETOSA, ODD]}).json()
    assert answer["is_outlier"] == [False, True]
    assert answer["outlier_score"] == pytest.approx([0.1916, -2.941], abs=1e-3)
    assert api.get("/predict/test/label").json()["prediction"] == ["setosa"]
    assert api.get("/metadata").json()["outlier_type"] == "bool, float32"


def test_2000_concurrent_requests_make_2000_records_matching_their_answers(pattern, tmp_path):
    tail = reader(pattern, tmp_path)
    tail.records()  # start after what earlier tests wrote
    bodies = [{"data": [ROWS[i % 4], ROWS[(i + 1) % 4]][: 1 + i % 2]} for i in range(2000)]
    answers = asyncio.run(predict_concurrently(pattern.url("api"), bodies))
    assert [a.status_code for a in answers] == [200] * 2000
    by_id = {a.json()["job_id"]: (body, a.json()) for body, a in zip(bodies, answers, strict=True)}
    assert len(by_id) == 2000  # every request its own id
    found = records_for(tail, set(by_id))
    assert len(found) == 2000 and all(len(records) == 1 for records in found.values())
    for rid, (body, answer) in by_id.items():
        (record,) = found[rid]
        assert record["input"] == body["data"]
        assert record["endpoint"] == "/predict"
        assert record["prediction"] == answer["prediction"]
        assert record["is_outlier"] == answer["is_outlier"]
        assert record["outlier_score"] == answer["outlier_score"]
    assert tail.malformed == 0 and tail.skipped == 0
    # Both workers wrote (each record in one worker's batch); the written count adds up over them.
    written = _metric(pattern.client("api"), 'prediction_log_records_total{outcome="written"}')
    assert written >= 2000 and _metric(pattern.client("api"), 'prediction_log_records_total{outcome="dropped"}') == 0


def _metric(client: httpx.Client, series: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_bad_input_is_refused_and_writes_no_record(pattern, tmp_path):
    api = pattern.client("api")
    tail = reader(pattern, tmp_path)
    tail.records()
    bad = [b'{"data": [[5.1, 3.5, 1.4]]}', b'{"data": [[NaN, 3.5, 1.4, 0.2]]}', b'{"data": [["a", 3.5, 1.4, 0.2]]}']
    bad += [b'{"data": []}', b"", b'{"data": [[5.1, 3.5, 1.4, 0.2], [1.0]]}']
    ids = set()
    for number, body in enumerate(bad):
        rid = f"bad-{number}"
        answer = api.post("/predict", content=body, headers={"content-type": "application/json", "x-request-id": rid})
        assert_refused(answer, 422)
        ids.add(rid)
    good = api.post("/predict", json={"data": [SETOSA]}).json()["job_id"]  # a marker: read up to it
    found = records_for(tail, ids | {good}, until=good)
    assert set(found) == {good}
    assert_healthy(api)


def test_the_shipper_service_prints_each_record(pattern):
    api = pattern.client("api")
    ids = [api.post("/predict", json={"data": [ODD]}).json()["job_id"] for _ in range(3)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shipped = [json.loads(line) for line in pattern.logs("shipper").splitlines() if line.startswith("{")]
        mine = [record for record in shipped if record["request_id"] in ids]
        if len(mine) == 3:
            break
        time.sleep(0.2)
    assert [record["request_id"] for record in mine] == ids
    assert all(record["is_outlier"] == [True] and isinstance(record["date"], float) for record in mine)


def test_a_graceful_stop_writes_every_buffered_record_and_the_shipper_ships_it(tmp_path):
    # The writers gather for a minute before they write: at the stop every record is still in a queue.
    overrides = {"api": {"PREDICTION_LOG_FLUSH_SECONDS": "60"}}
    with start_pattern(PATTERN, overrides=overrides) as started:
        bodies = [{"data": [ROWS[i % 4]]} for i in range(150)]  # the runner keeps the last 200 lines of output
        answers = asyncio.run(predict_concurrently(started.url("api"), bodies, connections=16))
        assert [a.status_code for a in answers] == [200] * 150
        ids = {a.json()["job_id"] for a in answers}
        path = log_path(started)
        assert not path.exists() or path.read_text() == ""  # nothing written yet
        master = started.run.kill("api", signum=signal.SIGTERM)  # gunicorn's graceful stop
        master.wait(30)
        written = [json.loads(line) for line in path.read_text().splitlines()]
        run = started.run
    assert master.returncode == 0
    assert sorted(record["request_id"] for record in written) == sorted(ids)
    # The shipper, stopped after the API (it starts first), shipped every record of the API's last flush.
    shipped = [json.loads(line) for line in run.logs("shipper").splitlines() if line.startswith("{")]
    assert sorted(record["request_id"] for record in shipped) == sorted(ids)


def test_records_survive_the_file_s_rotation(tmp_path):
    # About 45 KB of records, rotated at 30 KB: the running shipper reads the renamed file to its end.
    with start_pattern(PATTERN, overrides={"api": {"PREDICTION_LOG_MAX_BYTES": "30000"}}) as started:
        bodies = [{"data": [ROWS[i % 4]]} for i in range(100)]
        answers = asyncio.run(predict_concurrently(started.url("api"), bodies, connections=8))
        ids = {a.json()["job_id"] for a in answers}
        found = records_for(reader(started, tmp_path, "*"), ids)
        rotated = log_path(started).with_name(log_path(started).name + ".1")
        assert rotated.exists() and rotated.stat().st_size <= 30000
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shipped = [json.loads(line) for line in started.logs("shipper").splitlines() if line.startswith("{")]
            if len(shipped) >= 100:
                break
            time.sleep(0.2)
    assert set(found) == ids and all(len(records) == 1 for records in found.values())
    assert sorted(record["request_id"] for record in shipped) == sorted(ids)
