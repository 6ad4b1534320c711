"""The open inference protocol (V2) on the shared serving app, in process, on the iris model: the protocol's own
example requests, answers equal to the book's /predict for the same rows, and the protocol's error answer for
every kind of bad request. A real client (tritonclient) talks to a running pattern in web_single's tests."""

import json

import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient

from mlpatterns.images import ImagePreprocessor, encode_png
from mlpatterns.serving.app import create_serving_app
from mlpatterns.serving.tensor_service import TensorServiceSettings, create_tensor_app
from mlpatterns.settings import ModelServingSettings
from mlpatterns.tests.test_dataplane import COLOURS, IMAGE_SHAPE, channel_model, image

INFER = "/v2/models/iris_svc/infer"
ROWS = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.3, 3.3, 6.0, 2.5]]


@pytest.fixture(scope="module")
def client():
    with TestClient(create_serving_app(ModelServingSettings(max_batch_rows=100))) as client:
        yield client


def tensor(data, shape, name="X", datatype="FP32") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def infer(client, *inputs, **fields):
    return client.post(INFER, json={"inputs": list(inputs), **fields})


def outputs(answer) -> dict:
    return {output["name"]: output for output in answer.json()["outputs"]}


def test_health_and_metadata(client):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/iris_svc/ready"):
        answer = client.get(path)
        assert (answer.status_code, answer.content) == (200, b""), path
    assert client.get("/v2").json() == {"name": "mlpatterns", "version": "0.1.0", "extensions": []}
    assert client.get("/v2/models/iris_svc").json() == {
        "name": "iris_svc",
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }


def test_the_protocols_example_request_on_this_models_input(client):
    """The protocol's inference example (its id, its requested output), on the model's one input: the id is
    echoed, and only the requested output is answered."""
    answer = client.post(
        INFER,
        content=b'{"id" : "42", "inputs" : [{"name" : "X", "shape" : [2, 4], "datatype" : "FP32",'
        b' "data" : [5.1, 3.5, 1.4, 0.2, 6.3, 3.3, 6.0, 2.5]}], "outputs" : [{"name" : "label"}]}',
        headers={"content-type": "application/json"},
    )
    assert answer.json() == {
        "model_name": "iris_svc",
        "id": "42",
        "outputs": [{"name": "label", "shape": [2], "datatype": "BYTES", "data": ["setosa", "virginica"]}],
    }


def test_the_protocols_example_for_another_model_is_a_400_that_says_why(client):
    """The protocol's example verbatim: two inputs (input0 UINT32, input1 BOOL) of a model this is not."""
    example = {
        "id": "42",
        "inputs": [
            tensor([1, 2, 3, 4], [2, 2], name="input0", datatype="UINT32"),
            tensor([True], [3], name="input1", datatype="BOOL"),
        ],
        "outputs": [{"name": "output0"}],
    }
    answer = client.post(INFER, json=example)
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "inputs: List should have at most 1 item after validation, not 2; "
        "outputs[0].name: Input should be 'label' or 'probabilities'"
    }


def test_nested_and_flat_data_are_one_tensor(client):
    """The protocol's two forms of a tensor's data ([[1, 2], [4, 5]] or [1, 2, 4, 5]); here KServe's iris example."""
    nested = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
    flat = [value for row in nested for value in row]
    answers = [infer(client, tensor(data, [2, 4])).json() for data in (nested, flat)]
    assert answers[0] == answers[1]
    assert outputs(infer(client, tensor(flat, [2, 4])))["label"]["data"] == ["versicolor", "versicolor"]


def test_answers_equal_the_books_predict(client):
    rows = np.random.default_rng(7).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], (97, 4)).round(2).tolist() + ROWS
    scores = client.post("/predict", json={"data": rows}).json()["prediction"]
    labels = client.post("/predict/label", json={"data": rows}).json()["prediction"]
    answer = outputs(infer(client, tensor(np.ravel(rows).tolist(), [len(rows), 4])))
    assert answer["label"] == {"name": "label", "shape": [len(rows)], "datatype": "BYTES", "data": labels}
    probabilities = answer["probabilities"]
    assert (probabilities["shape"], probabilities["datatype"]) == ([len(rows), 3], "FP32")
    # The same float32 values: FP32 data is written with float32's shortest digits, /predict's with float64's.
    np.testing.assert_array_equal(np.float32(probabilities["data"]).reshape(-1, 3), np.float32(scores))


def test_requested_outputs_are_answered_in_the_order_asked(client):
    answer = infer(client, tensor(ROWS[0], [1, 4]), outputs=[{"name": "probabilities"}, {"name": "label"}])
    assert [output["name"] for output in answer.json()["outputs"]] == ["probabilities", "label"]
    assert "id" not in answer.json()


BAD_REQUESTS = {  # (inputs, more fields of the request) -> (status, error)
    "unknown input name": ([tensor(ROWS[0], [1, 4], name="input-0")], {}, 400, "inputs[0].name: Input should be 'X'"),
    "wrong datatype": (
        [tensor(ROWS[0], [1, 4], datatype="FP64")],
        {},
        400,
        "inputs[0].datatype: Input should be 'FP32'",
    ),
    "two inputs": ([tensor(ROWS[0], [1, 4])] * 2, {}, 400, "inputs: List should have at most 1 item"),
    "no input": ([], {}, 400, "inputs: List should have at least 1 item"),
    "shape product is not the data's length": (
        [tensor(ROWS[0], [2, 4])],
        {},
        400,
        "inputs[0]: shape [2, 4] holds 8 values; data has 4",
    ),
    "item shape is not the model's": ([tensor(ROWS[0], [1, 3])], {}, 400, "the model takes [-1, 4]; got [1, 3]"),
    "shape of another rank": ([tensor(ROWS[0], [4])], {}, 400, "inputs[0].shape: List should have at least 2 items"),
    "negative dimension": ([tensor(ROWS[0], [-1, 4])], {}, 400, "inputs[0].shape[0]: Input should be greater than"),
    "nested data unlike the shape": ([tensor([ROWS[0]], [2, 2])], {}, 400, "the model takes [-1, 4]; got [2, 2]"),
    "nested data of another shape": ([tensor([ROWS[0]], [2, 4])], {}, 400, "data nested as [1, 4]; the shape says"),
    "ragged nested data": ([tensor([ROWS[0], ROWS[1][:3]], [2, 4])], {}, 400, "nested lists of unequal length"),
    "a string among the numbers": ([tensor([5.1, "3.5", 1.4, 0.2], [1, 4])], {}, 400, "data[1]: Input should be"),
    "a boolean among the numbers": ([tensor([5.1, True, 1.4, 0.2], [1, 4])], {}, 400, "data[1]: Input should be"),
    "a value out of float32": ([tensor([5.1, 1e39, 1.4, 0.2], [1, 4])], {}, 400, "within the range of float32"),
    "no item": ([tensor([], [0, 4])], {}, 400, "data must hold at least one row"),
    "unknown output": (
        [tensor(ROWS[0], [1, 4])],
        {"outputs": [{"name": "output0"}]},
        400,
        "outputs[0].name: Input should be 'label' or 'probabilities'",
    ),
    "over the batch limit": ([tensor([1.0] * 404, [101, 4])], {}, 413, "data has 101 rows; at most 100"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_are_the_protocols_error_answer(client, case):
    inputs, fields, status, error = BAD_REQUESTS[case]
    answer = client.post(INFER, json={"inputs": inputs, **fields})
    assert answer.status_code == status, answer.text
    assert list(answer.json()) == ["error"] and error in answer.json()["error"], answer.text


@pytest.mark.parametrize(
    "body, error",
    [
        (b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [NaN, 1, 1, 1]}]}', "finite number"),
        (b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, -Infinity]}]}', "finite"),
        (b'{"inputs": [', "JSON decode error: EOF while parsing"),
        (b"", "body: Field required"),
        (b"[]", "body: Input should be a valid dictionary"),
        (b'{"parameters": {"p": NaN}, "inputs": []}', "parameters.p: Value error, a parameter is a string, a finite"),
        (b'{"parameters": {"p": [1]}, "inputs": []}', "parameters.p: Value error, a parameter is a string, a finite"),
    ],
)
def test_bodies_that_are_no_inference_request(client, body, error):
    answer = client.post(INFER, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and error in answer.json()["error"], answer.text


def test_binary_tensors_are_refused_with_a_reason(client):
    body = b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}'
    answer = client.post(
        INFER, content=body + np.float32(ROWS[0]).tobytes(), headers={"Inference-Header-Content-Length": str(len(body))}
    )
    assert answer.status_code == 400
    assert answer.json() == {"error": "the binary tensor extension is not supported: send the tensors as JSON"}


def test_the_fast_lane_answers_inference_whatever_the_content_type_and_leaves_bad_bodies_to_the_route(
    client, monkeypatch
):
    route = next(route for route in client.app.router.routes if route.path == INFER)
    answer, bodies = route.answer, []
    monkeypatch.setattr(route, "answer", lambda body, params: bodies.append(body) or answer(body, params))
    body = json.dumps({"inputs": [tensor(ROWS[0], [1, 4])]})
    answers = [
        client.post(INFER, content=body, headers=headers)
        for headers in ({"content-type": "application/json"}, {"content-type": "text/plain"}, {})
    ]
    assert len(bodies) == 3  # each answered by the lane
    assert all(a.status_code == 200 and a.json() == answers[0].json() for a in answers)
    assert answers[0].json()["outputs"][0]["data"] == ["setosa"]
    # A body that does not parse: the lane gives it to the route, whose answer names what the headers say.
    test_binary_tensors_are_refused_with_a_reason(client)
    assert len(bodies) == 4


def test_another_model_is_a_404_and_a_wrong_method_a_405(client):
    for method, path in [("GET", "/v2/models/resnet"), ("POST", "/v2/models/resnet/infer")]:
        answer = client.request(method, path, json={})
        assert answer.status_code == 404
        assert answer.json() == {
            "error": f"no model at {path}: this server serves 'iris_svc' (GET /v2/models/iris_svc)"
        }
    for path, unversioned in [("/versions/1", ""), ("/versions/2/infer", "/infer"), ("/versions/1/ready", "/ready")]:
        answer = client.post("/v2/models/iris_svc" + path)
        assert answer.status_code == 404
        assert answer.json() == {
            "error": f"'iris_svc' has no versions to choose from: use /v2/models/iris_svc{unversioned}"
        }
    answer = client.get(INFER)
    assert (answer.status_code, answer.headers["allow"]) == (405, "POST")
    assert answer.json() == {"error": f"{INFER} takes POST"}


def test_the_openapi_document_describes_the_routes(client):
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/iris_svc", "/v2/models/iris_svc/ready"):
        assert "get" in paths[path], path
    operation = paths[INFER]["post"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferenceResponse"
    }
    assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferenceError"
    }
    assert "422" not in operation["responses"] and "x-invalid-request-status" not in operation  # it never sends one
    assert {"408", "413"} <= set(operation["responses"])  # the body's deadline and size, as every body route
    schemas = document["components"]["schemas"]
    request = {**schemas["InferenceRequest"], "components": document["components"]}  # its $refs resolve here
    (example,) = schemas["InferenceRequest"]["examples"]
    assert example == {"id": "1", "inputs": [tensor([5.1, 3.5, 1.4, 0.2], [1, 4])]}
    validator = jsonschema.Draft202012Validator(request)
    validator.validate(example)
    validator.validate({"inputs": [tensor([ROWS[0], ROWS[1]], [2, 4])]})  # nested data is documented too
    for bad in ({"inputs": [tensor(ROWS[0], [1, 4], datatype="FP64")]}, {"inputs": [tensor([1e39], [1, 1])]}):
        assert not validator.is_valid(bad), bad
    assert client.post(INFER, json=example).status_code == 200


def test_an_image_model_takes_a_bytes_tensor_of_encoded_images_and_answers_the_hooks_fields(tmp_path):
    channel_model(tmp_path / "model.onnx")
    (tmp_path / "labels.json").write_text(json.dumps(dict(enumerate(COLOURS))))
    settings = ModelServingSettings(
        MODEL_PATH=str(tmp_path / "model.onnx"), model_name="colours", sample_input=[encode_png(image(0, 0, 99))]
    )
    app = create_serving_app(
        settings,
        preprocess=ImagePreprocessor(IMAGE_SHAPE),
        postprocess=lambda answer, batch: answer.with_extra(model=answer.model, brightness=batch.mean(axis=(1, 2, 3))),
    )
    with TestClient(app) as client:
        metadata = client.get("/v2/models/colours").json()
        assert metadata["inputs"] == [{"name": "x", "datatype": "BYTES", "shape": [-1]}]
        assert metadata["outputs"][2] == {"name": "brightness", "datatype": "FP32", "shape": [-1]}
        red, green = encode_png(image(255, 0, 0)), encode_png(image(0, 255, 0))
        answer = client.post("/v2/models/colours/infer", json={"inputs": [tensor([red, green], [2], "x", "BYTES")]})
        assert answer.json()["parameters"] == {"model": "colours"}  # one value per batch
        assert outputs(answer)["label"]["data"] == ["red", "green"]
        assert outputs(answer)["brightness"] == {
            "name": "brightness",
            "shape": [2],
            "datatype": "FP32",
            "data": [85, 85],
        }
        refused = client.post(
            "/v2/models/colours/infer", json={"inputs": [tensor([red, "aGVsbG8="], [2], "x", "BYTES")]}
        )
        assert refused.status_code == 400 and "item 1" in refused.json()["error"], refused.text
        refused = client.post("/v2/models/colours/infer", json={"inputs": [tensor([red], [2], "x", "BYTES")]})
        assert refused.json() == {"error": "inputs[0]: shape [2] holds 2 values; data has 1"}


def test_the_tensor_service_answers_a_json_tensor_as_its_binary_one():
    with TestClient(create_tensor_app(TensorServiceSettings())) as client:
        assert client.get("/v2/models/cifar10").json()["inputs"] == [
            {"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}
        ]
        pixels = np.random.default_rng(3).integers(0, 256, (2, 3, 32, 32)).astype(np.float32)
        headers = {
            "content-type": "application/octet-stream",
            "X-Tensor-Shape": "2,3,32,32",
            "X-Tensor-Dtype": "float32",
        }
        binary = client.post("/predict", content=pixels.tobytes(), headers=headers).json()
        answer = outputs(
            client.post(
                "/v2/models/cifar10/infer", json={"inputs": [tensor(pixels.ravel().tolist(), [2, 3, 32, 32], "input")]}
            )
        )
        assert answer["label"]["data"] == binary["labels"]
        np.testing.assert_array_equal(
            np.float32(answer["probabilities"]["data"]).reshape(2, 10), np.float32(binary["prediction"])
        )


def test_a_served_name_stands_for_the_model_in_paths_and_answers():
    """Arms of an A/B split answer under one name; each still says which it is, in the postprocess hook's field."""
    settings = ModelServingSettings(model_name="iris_rf.onnx", served_model_name="iris")
    app = create_serving_app(settings, postprocess=lambda answer, batch: answer.with_extra(mode=answer.model))
    with TestClient(app) as client:
        assert client.get("/v2/models/iris").json()["name"] == "iris"
        answer = client.post("/v2/models/iris/infer", json={"inputs": [tensor(ROWS[0], [1, 4])]}).json()
        assert (answer["model_name"], answer["parameters"]) == ("iris", {"mode": "iris_rf.onnx"})
        assert client.get("/v2/models/iris_rf.onnx").status_code == 404
