"""The shared serving app on a tiny model whose items are 2x3 matrices: the request schema follows the model's
input rank, both request paths give the same answers, and bad input is one short 422. Then, on iris rows, the
exact message of each kind of bad input (the one copy of that table: patterns do not repeat it)."""

import asyncio
import json
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from mlpatterns.predictor import OnnxPredictor
from mlpatterns.serving.app import create_serving_app, request_model
from mlpatterns.serving.schemas import LabelsResponse, ScoresResponse
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


def test_the_fast_path_parses_with_the_routes_model_and_answers_as_the_standard_path(client, monkeypatch):
    calls = []
    routes = [route for route in client.app.router.routes if getattr(route, "parse_arrays", None)]
    assert {route.path for route in routes} == {"/predict", "/predict/label"}
    for route in routes:
        assert route.request_model is request_model(client.app.state.plane, arrays=True)
        parse = route.parse_arrays
        monkeypatch.setattr(route, "parse_arrays", lambda body, parse=parse: calls.append(body) or parse(body))
    body = json.dumps({"data": ITEMS * 10})  # over 256 bytes: a body the lane parses into an array
    answers = [
        client.post(path, content=body, headers={"content-type": content_type}).json()
        for path in ("/predict", "/predict/label")
        for content_type in ("application/json", "application/json; charset=utf-8")
    ]
    assert answers[0] == answers[1] and answers[2] == answers[3] == {"prediction": ["b", "a", "c"] * 10}
    assert len(calls) == 2  # one per route: the charset variant took FastAPI's standard way


def test_the_fast_lane_reads_a_body_in_pieces_and_counts_its_answer_under_the_route(client):
    app = client.app
    body = json.dumps({"data": ITEMS * 30}).encode()  # over 256 bytes: parsed straight into an array
    pieces = [body[:10], body[10:200], body[200:]]

    async def post() -> tuple[int, bytes]:
        messages = [{"type": "http.request", "body": piece, "more_body": i < 2} for i, piece in enumerate(pieces)]
        sent = []

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "method": "POST", "path": "/predict/label", "headers": headers, "query_string": b""}
        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    def answered() -> float:
        pattern = 'http_requests_total{method="POST",path="/predict/label",status="200"} '
        lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(pattern)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    before = answered()
    status, answer = asyncio.run(post())
    assert status == 200
    assert json.loads(answer) == {"prediction": ["b", "a", "c"] * 30}
    assert answered() == before + 1  # labelled with the route, though the router never saw the request


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


# -- the app's exact messages for bad input, on iris rows (every serving pattern answers with these; the
# -- repo-wide tests/test_bad_input.py proves each running service refuses bad input and keeps serving) ----

IRIS_MODEL = Path(__file__).resolve().parents[2] / "models" / "iris_svc" / "model.onnx"
SETOSA = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def iris():
    with TestClient(create_serving_app(ModelServingSettings(MODEL_PATH=str(IRIS_MODEL)))) as client:
        yield client


@pytest.mark.parametrize(
    "body, message",
    [
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
def test_bad_input_is_a_422_with_a_clear_message(iris, body, message):
    for path in ("/predict", "/predict/label"):
        response = iris.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert message in json.dumps(response.json()["detail"])


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
def test_a_bad_large_batch_is_one_short_422(iris, content_type):
    rows = [SETOSA] * 17 + [["5.1", 3.5, 1.4, 0.2]] * 9_983  # 10,000 rows, every one from the 18th on bad
    response = iris.post("/predict", content=json.dumps({"data": rows}), headers={"content-type": content_type})
    assert response.status_code == 422
    assert len(response.content) < 2048  # the first error only, not 9,983 of them (megabytes)
    assert response.json() == {
        "detail": [{"type": "float_type", "loc": ["body", "data", 17, 0], "msg": "Input should be a valid number"}]
    }


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_body_is_a_413_at_the_default_limit(iris, streamed):
    huge = json.dumps({"data": [SETOSA] * 60_000}).encode()  # ~1.4 MB, over the 1 MiB default
    response = iris.post("/predict", content=iter([huge]) if streamed else huge)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body is larger than 1048576 bytes"}


def test_too_many_rows_is_a_413(iris):
    response = iris.post("/predict", json={"data": [[1, 2, 3, 4]] * 10_001})
    assert response.status_code == 413
    assert response.json() == {"detail": "data has 10001 rows; at most 10000 are accepted"}


def test_a_body_that_is_not_json_is_a_400(iris):
    """A syntax error, not a semantic one (HTTP's, nginx's and KServe's meaning); FastAPI alone answers 422."""
    for body in ("not json at all", '{"data": [[5.1,'):
        response = iris.post("/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["detail"].startswith("JSON decode error at character ")


def body_schema(client, path: str) -> dict:
    """The request body's JSON Schema in the app's OpenAPI document, references resolvable."""
    document = client.get("/openapi.json").json()
    schema = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}


def test_the_request_schema_carries_the_models_item_shape(client, iris):
    row = body_schema(iris, "/predict")["components"]["schemas"]["PredictRequest"]["properties"]["data"]["items"]
    assert {key: row[key] for key in ("type", "minItems", "maxItems")} == {
        "type": "array",
        "minItems": 4,
        "maxItems": 4,
    }
    for path in ("/predict", "/predict/label"):
        schema = body_schema(iris, path)
        jsonschema.validate({"data": [SETOSA]}, schema)
        for refused in ({"data": [[]]}, {"data": [SETOSA[:3]]}, {"data": [[1e39, 3.5, 1.4, 0.2]]}):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(refused, schema)
            assert iris.post(path, json=refused).status_code == 422
    images = body_schema(client, "/predict")
    jsonschema.validate({"data": ITEMS}, images)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"data": [[[1, 2, 3]]]}, images)  # a 1x3 item of a 2x3 model


def test_every_error_status_is_documented_with_its_body(iris):
    document = iris.get("/openapi.json").json()
    responses = document["paths"]["/predict"]["post"]["responses"]
    assert list(responses) == ["200", "400", "408", "413", "422"]
    schemas = document["components"]["schemas"]
    assert responses["413"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorMessage"}
    assert schemas["InvalidRequest"]["properties"]["detail"]["anyOf"][0] == {"type": "string"}
    assert "HTTPValidationError" not in schemas  # FastAPI's, whose `detail` is always a list
    assert list(document["paths"]["/health"]["get"]["responses"]) == ["200"]  # no body, no parameters


def test_a_postprocess_hook_s_fields_are_in_every_answer_and_documented_by_the_responses_given():
    class ArmScores(ScoresResponse):
        arm: str

    class ArmLabels(LabelsResponse):
        arm: str

    app = create_serving_app(
        ModelServingSettings(MODEL_PATH=str(IRIS_MODEL)),
        postprocess=lambda answer, batch: answer.with_extra(arm="a"),
        responses=(ArmScores, ArmLabels),
    )
    with TestClient(app) as client:
        body = {"data": [[5.1, 3.5, 1.4, 0.2]]}
        for method, path, content in [
            ("GET", "/predict/test", None),
            ("GET", "/predict/test/label", None),
            ("POST", "/predict", body),
            ("POST", "/predict/label", body),
        ]:
            assert client.request(method, path, json=content).json()["arm"] == "a"
            operation = client.get("/openapi.json").json()["paths"][path][method.lower()]
            schema = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            assert schema.rsplit("/", 1)[1] == ("ArmLabels" if path.endswith("label") else "ArmScores")
