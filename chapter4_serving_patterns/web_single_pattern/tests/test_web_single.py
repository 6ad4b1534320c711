"""End to end: the web single pattern started by the local runner, as `make up` starts it."""

import json
from pathlib import Path

import httpx
import numpy
import pytest

from mlpatterns.runner import run_pattern

PATTERN = Path(__file__).parents[1]
SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [5.9, 3.0, 4.2, 1.5]
VIRGINICA = [6.3, 3.3, 6.0, 2.5]


@pytest.fixture(scope="module")
def web():
    with run_pattern(PATTERN) as run:
        with httpx.Client(base_url=run.url("web"), timeout=10) as client:
            yield client


def test_health_label_and_metadata(web):
    assert web.get("/health").json() == {"health": "ok"}
    assert web.get("/label").json() == {"0": "setosa", "1": "versicolor", "2": "virginica"}
    metadata = web.get("/metadata").json()
    assert metadata["data_sample"] == [SETOSA]
    assert metadata["data_structure"] == "(1, 4)"
    assert metadata["prediction_structure"] == "(1, 3)"
    assert metadata["prediction_sample"] == web.get("/predict/test").json()["prediction"]


def test_book_examples_get_the_reference_labels(web):
    assert web.get("/predict/test/label").json() == {"prediction": ["setosa"]}
    for row, label in [(SETOSA, "setosa"), ([1.0, 2.0, 3.0, 4.0], "virginica"), (VIRGINICA, "virginica")]:
        assert web.post("/predict/label", json={"data": [row]}).json() == {"prediction": [label]}
    (probabilities,) = web.post("/predict", json={"data": [VIRGINICA]}).json()["prediction"]
    assert len(probabilities) == 3
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert probabilities[2] > 0.9


def test_every_row_of_a_batch_is_predicted(web):
    batch = [SETOSA, VERSICOLOR, VIRGINICA, SETOSA]
    assert web.post("/predict/label", json={"data": batch}).json() == {
        "prediction": ["setosa", "versicolor", "virginica", "setosa"]
    }
    together = web.post("/predict", json={"data": batch}).json()["prediction"]
    one_by_one = [web.post("/predict", json={"data": [row]}).json()["prediction"][0] for row in batch]
    assert numpy.allclose(together, one_by_one, atol=1e-6)


def test_metrics_count_requests_of_every_worker(web):
    before = _predict_count(web)
    for _ in range(20):  # several connections, so the requests spread over both workers
        httpx.post(str(web.base_url) + "/predict", json={"data": [SETOSA]})
    assert _predict_count(web) - before == 20


def _predict_count(web) -> float:
    total = 0.0
    for line in web.get("/metrics").text.splitlines():
        if line.startswith("http_requests_total{") and 'path="/predict"' in line and 'status="200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_api_docs_work_offline(web):
    page = web.get("/docs")
    assert page.status_code == 200
    assets = [part.split('"')[0] for part in page.text.split('src="')[1:]]
    assert assets and all(asset.startswith("/static-offline-docs/") for asset in assets)
    for asset in assets:
        assert web.get(asset).status_code == 200
    assert "/predict" in web.get("/openapi.json").json()["paths"]


# -- bad input: a 4xx with a clear message, never a 500, and the server keeps serving -------------------


def _post_raw(web, body: bytes | str, content_type: str = "application/json"):
    return web.post("/predict", content=body, headers={"content-type": content_type})


@pytest.mark.parametrize(
    "body, message",
    [
        ("not json at all", "JSON decode error"),
        ("", "Field required"),
        ("{}", "Field required"),
        ("[[5.1, 3.5, 1.4, 0.2]]", "valid dictionary"),
        ('{"rows": [[5.1, 3.5, 1.4, 0.2]]}', "Extra inputs are not permitted"),
        ('{"data": [[5.1, 3.5, 1.4, 0.2]], "extra": 1}', "Extra inputs are not permitted"),
        ('{"data": [5.1, 3.5, 1.4, 0.2]}', "valid list"),
        ('{"data": []}', "at least 1 item"),
        ('{"data": [[5.1, 3.5, 1.4]]}', "each row must have shape 4; got rows of shape 3"),
        ('{"data": [[5.1, 3.5, 1.4, 0.2, 9.9]]}', "each row must have shape 4; got rows of shape 5"),
        ('{"data": [[5.1, 3.5, 1.4, 0.2], [5.1, 3.5]]}', "rows of equal length"),
        ('{"data": [[]]}', "each row must have shape 4"),
        ('{"data": [["5.1", 3.5, 1.4, 0.2]]}', "valid number"),
        ('{"data": [[true, 3.5, 1.4, 0.2]]}', "valid number"),
        ('{"data": [[null, 3.5, 1.4, 0.2]]}', "valid number"),
        ('{"data": null}', "valid list"),
        ('{"data": [[NaN, 3.5, 1.4, 0.2]]}', "finite number"),
        ('{"data": [[Infinity, 3.5, 1.4, 0.2]]}', "finite number"),
        ('{"data": [[1e400, 3.5, 1.4, 0.2]]}', "finite number"),
        ('{"data": [[1e39, 3.5, 1.4, 0.2]]}', "within the range of float32"),
    ],
)
def test_bad_input_is_a_422_with_a_clear_message(web, body, message):
    for path in ("/predict", "/predict/label"):
        response = web.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert message in json.dumps(response.json()["detail"])
    assert web.get("/health").status_code == 200


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
def test_a_bad_large_batch_is_one_short_422(web, content_type):
    rows = [SETOSA] * 17 + [["5.1", 3.5, 1.4, 0.2]] * 9_983  # 10,000 rows, every one from the 18th on bad
    response = _post_raw(web, json.dumps({"data": rows}), content_type)
    assert response.status_code == 422
    assert len(response.content) < 2048  # the first error only, not 9,983 of them (megabytes)
    assert response.json() == {
        "detail": [{"type": "float_type", "loc": ["body", "data", 17, 0], "msg": "Input should be a valid number"}]
    }


def test_oversized_body_is_a_413(web):
    huge = json.dumps({"data": [SETOSA] * 60_000})  # ~1.4 MB, over the 1 MiB default
    response = _post_raw(web, huge)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body is larger than 1048576 bytes"}


def test_oversized_body_without_content_length_is_a_413(web):
    chunks = (b'{"data": [' + b"[5.1, 3.5, 1.4, 0.2], " * 60_000 + b"[5.1, 3.5, 1.4, 0.2]]}",)
    response = web.post("/predict", content=iter(chunks), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "larger than 1048576 bytes" in response.json()["detail"]


def test_too_many_rows_is_a_413(web):
    response = web.post("/predict", json={"data": [[1, 2, 3, 4]] * 10_001})
    assert response.status_code == 413
    assert response.json() == {"detail": "data has 10001 rows; at most 10000 are accepted"}


def test_wrong_method_and_unknown_path(web):
    assert web.get("/predict").status_code == 405
    assert web.post("/no/such/path", json={}).status_code == 404


def test_still_serving_after_bad_input(web):
    _post_raw(web, "{")
    _post_raw(web, json.dumps({"data": [SETOSA] * 60_000}))
    assert web.post("/predict/label", json={"data": [SETOSA]}).json() == {"prediction": ["setosa"]}
