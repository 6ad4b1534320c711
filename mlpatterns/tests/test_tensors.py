"""Tensors on the wire: every dtype round-trips exactly as little-endian bytes, and each malformed request is a
415 or a 422 naming what is wrong (through a real FastAPI app, so the statuses are the ones a caller sees)."""

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from mlpatterns.errors import InvalidInput, install_error_handlers
from mlpatterns.tensors import DTYPES, decode_tensor, encode_tensor, openapi_request, read_tensor

IMAGES = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) / 7


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_every_dtype_round_trips_exactly(dtype):
    array = (np.arange(24) - 3).reshape(2, 3, 4).astype(dtype)
    body, headers = encode_tensor(array)
    assert headers == {"Content-Type": "application/octet-stream", "X-Tensor-Shape": "2,3,4", "X-Tensor-Dtype": dtype}
    assert len(body) == array.nbytes
    decoded = decode_tensor(body, headers)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_bytes_are_little_endian_and_row_major_whatever_the_array_layout():
    big_endian_transposed = np.asfortranarray(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=">f4").T)
    body, headers = encode_tensor(big_endian_transposed)
    assert body == np.array([1.0, 3.0, 2.0, 4.0], dtype="<f4").tobytes()  # rows of the transposed array, in order
    assert headers["X-Tensor-Dtype"] == "float32"
    np.testing.assert_array_equal(decode_tensor(body, headers), big_endian_transposed)


def test_a_scalar_and_an_empty_batch_have_shapes_too():
    body, headers = encode_tensor(np.float32(2.5))
    assert (body, headers["X-Tensor-Shape"]) == (np.float32(2.5).tobytes(), "")
    assert decode_tensor(body, headers) == np.float32(2.5)
    body, headers = encode_tensor(np.zeros((0, 3), np.float32))
    assert body == b"" and decode_tensor(body, headers).shape == (0, 3)


def test_a_dtype_without_a_wire_form_is_refused_on_encoding():
    with pytest.raises(ValueError, match="not float16"):
        encode_tensor(np.zeros(2, np.float16))


BODY, HEADERS = encode_tensor(IMAGES)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"X-Tensor-Shape": None}, "the X-Tensor-Shape header is missing: the shape of the tensor, e.g. 1,3,32,32"),
        ({"X-Tensor-Dtype": None}, "the X-Tensor-Dtype header is missing: the dtype of the tensor, e.g. float32"),
        ({"X-Tensor-Dtype": "float16"}, "X-Tensor-Dtype must be one of float32, float64, int32, int64, uint8; got"),
        ({"X-Tensor-Dtype": "<f4"}, "X-Tensor-Dtype must be one of"),
        ({"X-Tensor-Shape": "2,3,4,6"}, "a float32 tensor of shape 2x3x4x6 has 576 bytes; the body has 480"),
        ({"X-Tensor-Shape": "1,3,4,5"}, "a float32 tensor of shape 1x3x4x5 has 240 bytes; the body has 480"),
        ({"X-Tensor-Dtype": "float64"}, "a float64 tensor of shape 2x3x4x5 has 960 bytes; the body has 480"),
        (
            {"X-Tensor-Shape": "2,-3,4,5"},
            "X-Tensor-Shape must be up to 8 sizes (whole numbers) separated by commas, e.g. 1,3,32,32; got '2,-3,4,5'",
        ),
        ({"X-Tensor-Shape": "2,,4,5"}, "X-Tensor-Shape must be"),
        ({"X-Tensor-Shape": "2.0,3,4,5"}, "X-Tensor-Shape must be"),
        ({"X-Tensor-Shape": "２,3,4,5"}, "X-Tensor-Shape must be"),  # a full-width digit is a digit, not ASCII
        ({"X-Tensor-Shape": ",".join(["1"] * 9)}, "X-Tensor-Shape must be up to 8 sizes"),
        ({"X-Tensor-Shape": "99999999999999999999999,1"}, "has 399999999999999999999996 bytes; the body has 480"),
    ],
)
def test_a_malformed_tensor_is_refused_with_its_problem(change, message):
    headers = {key: value for key, value in {**HEADERS, **change}.items() if value is not None}
    with pytest.raises(InvalidInput) as refused:
        decode_tensor(BODY, headers)
    assert message in refused.value.detail


@pytest.fixture(scope="module")
def client():
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/tensor", openapi_extra=openapi_request([3, 4, 5], "float32"))
    async def tensor(request: Request) -> dict:
        array = await read_tensor(request)
        return {"shape": list(array.shape), "sum": float(array.sum())}

    with TestClient(app) as client:
        yield client


def test_a_tensor_request_is_read_whatever_the_case_of_its_headers(client):
    headers = {key.lower(): value for key, value in HEADERS.items()}
    headers["content-type"] = "Application/Octet-Stream; foo=bar"
    answer = client.post("/tensor", content=BODY, headers=headers)
    assert answer.status_code == 200
    assert answer.json() == {"shape": [2, 3, 4, 5], "sum": pytest.approx(float(IMAGES.sum()))}


@pytest.mark.parametrize(
    "headers, media_type",
    [
        ({"Content-Type": "application/json"}, "not application/json"),
        ({"Content-Type": "image/png"}, "not image/png"),
        ({}, "not a body without Content-Type"),
    ],
)
def test_anything_but_a_tensor_is_a_415(client, headers, media_type):
    answer = client.post("/tensor", content=b'{"data": [[1.0]]}', headers=headers)
    assert answer.status_code == 415
    detail = answer.json()["detail"]
    assert detail.startswith("the body must be a tensor (application/octet-stream with X-Tensor-Shape and ")
    assert detail.endswith(media_type)


def test_a_malformed_tensor_request_is_a_422(client):
    answer = client.post("/tensor", content=BODY[:-4], headers=HEADERS)
    assert answer.status_code == 422
    assert answer.json() == {"detail": "a float32 tensor of shape 2x3x4x5 has 480 bytes; the body has 476"}


def test_the_openapi_document_describes_the_body_and_its_headers(client):
    operation = client.get("/openapi.json").json()["paths"]["/tensor"]["post"]
    assert list(operation["requestBody"]["content"]) == ["application/octet-stream"]
    assert "N,3,4,5 float32 tensor" in operation["requestBody"]["description"]
    headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
    assert headers["X-Tensor-Shape"]["required"] and headers["X-Tensor-Dtype"]["schema"]["enum"] == list(DTYPES)
    assert "415" in operation["responses"]
