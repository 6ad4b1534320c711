"""The iris API with outlier scores (mlpatterns.outlier) on the trained models: the fields of every row, job_id as the
request id, the metadata, and one event per answered request (none for refused input)."""

import pytest
from fastapi.testclient import TestClient

from mlpatterns.outlier import OutlierServingSettings, PredictionEvent, create_outlier_app
from mlpatterns.testing import assert_refused

SETOSA = [5.1, 3.5, 1.4, 0.2]
ODD = [1.0, 2.0, 3.0, 4.0]  # the book's outlier


@pytest.fixture
def events() -> list[PredictionEvent]:
    return []


@pytest.fixture
def api(events):
    with TestClient(create_outlier_app(OutlierServingSettings(), on_prediction=events.append)) as client:
        yield client


def test_every_row_gets_its_outlier_flag_and_score(api):
    answer = api.post("/predict", json={"data": [SETOSA, ODD]}).json()
    assert answer["is_outlier"] == [False, True]
    assert answer["outlier_score"] == pytest.approx([0.1916, -2.941], abs=1e-3)
    assert len(answer["prediction"]) == 2 and answer["prediction"][0][0] > 0.9
    labels = api.post("/predict/label", json={"data": [SETOSA, ODD]}).json()
    assert labels["prediction"][0] == "setosa"
    assert labels["is_outlier"] == [False, True]


def test_job_id_is_the_request_id(api):
    answer = api.post("/predict", json={"data": [SETOSA]}, headers={"X-Request-ID": "mine-1"})
    assert answer.json()["job_id"] == "mine-1" == answer.headers["x-request-id"]
    first, second = api.get("/predict/test"), api.get("/predict/test/label")
    assert first.json()["job_id"] == first.headers["x-request-id"]
    assert len(first.json()["job_id"]) == 32 and first.json()["job_id"] != second.json()["job_id"]
    assert second.json()["prediction"] == ["setosa"] and second.json()["is_outlier"] == [False]


def test_metadata_describes_the_outlier_fields(api):
    metadata = api.get("/metadata").json()
    assert metadata["outlier_type"] == "bool, float32"
    assert metadata["outlier_structure"] == "(1, 2)"
    assert metadata["outlier_sample"][0] is False
    assert metadata["outlier_sample"][1] == pytest.approx(0.1916, abs=1e-3)
    assert metadata["data_sample"] == [SETOSA]


def test_one_event_per_answered_request_and_none_for_refused_input(api, events):
    api.post("/predict", json={"data": [SETOSA, ODD]}, headers={"X-Request-ID": "req-2"})
    api.get("/predict/test/label")
    for bad in ({"data": [[5.1, 3.5, 1.4]]}, {"data": []}, {"data": [["5.1", 3.5, 1.4, 0.2]]}):
        assert_refused(api.post("/predict", json=bad), 422)
    assert [event.endpoint for event in events] == ["/predict", "/predict/test/label"]
    record = events[0].record()
    assert record["request_id"] == "req-2"
    assert record["input"] == [SETOSA, ODD]
    assert record["model"] == "iris_svc" and record["outlier_model"] == "iris_ocs"
    assert len(record["model_version"]) == 12
    assert record["label"][0] == "setosa"
    assert record["is_outlier"].tolist() == [False, True]
    assert record["time"].endswith("Z") and record["latency_ms"] >= 0


def test_the_threshold_is_a_setting():
    settings = OutlierServingSettings(outlier_lower_threshold=0.5)  # the setosa sample scores ~0.19
    with TestClient(create_outlier_app(settings)) as api:
        assert api.post("/predict", json={"data": [SETOSA]}).json()["is_outlier"] == [True]
