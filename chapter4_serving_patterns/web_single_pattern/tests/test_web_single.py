"""End to end: the web single pattern started by the local runner, as `make up` starts it.

Bad input: the app's exact messages are asserted once, in mlpatterns/tests/test_serving_app.py; that this
service refuses every kind of bad input and keeps serving, in the repo-wide tests/test_bad_input.py."""

from pathlib import Path

import httpx
import numpy
import pytest
import tritonclient.http
from tritonclient.utils import InferenceServerException

PATTERN = Path(__file__).parents[1]
SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [5.9, 3.0, 4.2, 1.5]
VIRGINICA = [6.3, 3.3, 6.0, 2.5]


@pytest.fixture(scope="module")
def web(pattern):
    return pattern.client("web")


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


def test_a_triton_client_talks_to_it_over_the_open_inference_protocol(pattern, web):
    """Triton's own HTTP client, unchanged: health, metadata, and the same answers as /predict and /predict/label.
    (JSON tensors: the protocol's binary extension is refused with a 400 that says so.)"""
    client = tritonclient.http.InferenceServerClient(f"127.0.0.1:{pattern.port('web')}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris_svc")
        metadata = client.get_model_metadata("iris_svc")
        assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
        batch = numpy.array([SETOSA, VERSICOLOR, VIRGINICA], dtype=numpy.float32)
        tensor = tritonclient.http.InferInput("X", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=False)
        wanted = [
            tritonclient.http.InferRequestedOutput(name, binary_data=False) for name in ("label", "probabilities")
        ]
        result = client.infer("iris_svc", [tensor], outputs=wanted, request_id="7")
        assert result.get_response()["id"] == "7"
        assert result.as_numpy("label").tolist() == ["setosa", "versicolor", "virginica"]
        scores = web.post("/predict", json={"data": batch.tolist()}).json()["prediction"]
        numpy.testing.assert_array_equal(result.as_numpy("probabilities"), numpy.float32(scores))
        tensor.set_data_from_numpy(batch)  # binary: Triton's extension
        with pytest.raises(InferenceServerException, match="binary tensor extension is not supported"):
            client.infer("iris_svc", [tensor])
        with pytest.raises(InferenceServerException, match="this server serves 'iris_svc'"):
            client.get_model_metadata("resnet50")
    finally:
        client.close()
