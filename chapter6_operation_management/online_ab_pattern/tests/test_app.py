"""The models' service on its own: every answer names its model in `mode`, as the original sample did."""

import pytest
from fastapi.testclient import TestClient

from chapter6_operation_management.online_ab_pattern.app import Settings, create_app

ROW = {"data": [[5.1, 3.5, 1.4, 0.2], [4.9, 2.5, 4.5, 1.7]]}


@pytest.mark.parametrize(
    "environment, mode",
    [
        ({}, "iris_svc.onnx"),  # the default model
        (
            {"MODEL_PATH": "models/iris_rf/model.onnx"},
            "iris_rf.onnx",
        ),  # named after its directory, as the original's file
        ({"MODEL_FILEPATH": "models/iris_rf/model.onnx", "MODEL_NAME": "candidate"}, "candidate"),
    ],
)
def test_every_prediction_route_names_the_model(monkeypatch, environment, mode):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with TestClient(create_app()) as client:
        answers = [
            client.get("/predict/test").json(),
            client.get("/predict/test/label").json(),
            client.post("/predict", json=ROW).json(),
            client.post("/predict/label", json=ROW).json(),
        ]
        assert [answer["mode"] for answer in answers] == [mode] * 4
        assert len(answers[2]["prediction"]) == len(answers[3]["prediction"]) == 2  # every row
        assert f'model="{mode}"' in client.get("/metrics").text  # the same name in the per-stage timings


def test_mode_is_documented_on_every_prediction_route():
    with TestClient(create_app(Settings())) as client:
        document = client.get("/openapi.json").json()
    for path, method in [
        ("/predict/test", "get"),
        ("/predict/test/label", "get"),
        ("/predict", "post"),
        ("/predict/label", "post"),
    ]:
        schema = document["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        name = schema["$ref"].rsplit("/", 1)[1]
        assert "mode" in document["components"]["schemas"][name]["required"], path
