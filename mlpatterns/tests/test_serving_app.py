"""The shared serving app on a tiny model whose items are 2x3 matrices: the request schema follows the model's
input rank, both request paths give the same answers, and bad input is one short 422."""

import json

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from mlpatterns.predictor import OnnxPredictor
from mlpatterns.serving.app import create_serving_app
from mlpatterns.serving.schemas import predict_request
from mlpatterns.settings import ModelServingSettings

ITEM_SHAPE = [2, 3]
CLASSES = ["a", "b", "c"]


def matrix_model(path) -> None:
    """Class k's score is item[0][k]: flatten each item, keep its first three values."""
    size = int(np.prod(ITEM_SHAPE))
    weights = helper.make_tensor("W", TensorProto.FLOAT, [size, 3], np.eye(size, 3).flatten().tolist())
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "W"], ["scores"])],
        "first_row",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *ITEM_SHAPE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        initializer=[weights],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture
def client(tmp_path):
    matrix_model(tmp_path / "model.onnx")
    (tmp_path / "labels.json").write_text(json.dumps(dict(enumerate(CLASSES))))
    settings = ModelServingSettings(MODEL_PATH=str(tmp_path / "model.onnx"), sample_input=[[[1, 2, 3], [0, 0, 0]]])
    predictor = OnnxPredictor(settings.model_path, settings.resolved_label_path).load()
    with TestClient(create_serving_app(settings, predictor)) as client:
        yield client


ITEMS = [[[1, 5, 2], [9, 9, 9]], [[7, 1, 1], [0, 0, 0]], [[0, 0, 0.5], [-1, -1, -1]]]


def test_every_item_is_predicted(client):
    assert client.post("/predict", json={"data": ITEMS}).json() == {"prediction": [[1, 5, 2], [7, 1, 1], [0, 0, 0.5]]}
    assert client.post("/predict/label", json={"data": ITEMS}).json() == {"prediction": ["b", "a", "c"]}
    metadata = client.get("/metadata").json()
    assert metadata["data_structure"] == "(1, 2, 3)" and metadata["data_sample"] == [[[1, 2, 3], [0, 0, 0]]]
    assert client.get("/predict/test/label").json() == {"prediction": ["c"]}


def test_the_fast_path_validates_with_the_routes_model_and_answers_as_the_standard_path(client, monkeypatch):
    calls = []
    model = predict_request(len(ITEM_SHAPE))
    validate = model.model_validate_json
    monkeypatch.setattr(model, "model_validate_json", lambda body: calls.append(body) or validate(body))
    body = json.dumps({"data": ITEMS})
    answers = [
        client.post(path, content=body, headers={"content-type": content_type}).json()
        for path in ("/predict", "/predict/label")
        for content_type in ("application/json", "application/json; charset=utf-8")
    ]
    assert answers[0] == answers[1] and answers[2] == answers[3] == {"prediction": ["b", "a", "c"]}
    assert len(calls) == 2  # one per route: the charset variant took FastAPI's standard way


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
@pytest.mark.parametrize(
    "data, detail",
    [
        ([[[1, 2], [3, 4]]], "each item must have shape 2x3; got items of shape 2x2"),
        ([[[1, 2, 3]] * 3], "each item must have shape 2x3; got items of shape 3x3"),
        ([[[1, 2, 3], [4, 5]]], "data must be a list of items of equal shape (2x3), each nested lists of numbers"),
        ([[1, 2, 3]], [{"type": "list_type", "loc": ["body", "data", 0, 0], "msg": "Input should be a valid list"}]),
        (
            [[[[1], [2], [3]]] * 2],
            [{"type": "float_type", "loc": ["body", "data", 0, 0, 0], "msg": "Input should be a valid number"}],
        ),
    ],
    ids=["2x2", "3x3", "ragged", "too shallow", "too deep"],
)
def test_a_wrong_item_is_a_422_that_says_what_is_wrong(client, data, detail, content_type):
    response = client.post("/predict", content=json.dumps({"data": data}), headers={"content-type": content_type})
    assert response.status_code == 422
    assert response.json() == {"detail": detail}
    assert client.post("/predict", json={"data": ITEMS}).status_code == 200
