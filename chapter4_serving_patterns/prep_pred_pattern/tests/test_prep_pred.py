"""End to end: the prep and pred services started by the local runner, as `make up` starts them.

What the pattern promises, each proved by what the running processes show, not by reading the code:
- the combined answer: every sample digit, in any common image mode, comes back right through both services;
- the split: pred receives one tensor per request and never an image (its counters by media type and bytes);
  the prep processes never load onnxruntime, and the pred processes never load Pillow (their memory maps);
- each refuses what is not its job, with a clear 4xx: images at pred (415), bad images at prep (before a hop);
- fault isolation: with pred killed, prep's /health answers and its predictions are a 503 naming pred; once the
  runner has restarted pred (restart: unless-stopped), prep answers again.
"""

import base64
import io
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mlpatterns.images import sample_digits
from mlpatterns.tensors import encode_tensor
from mlpatterns.testing import assert_healthy, assert_refused, metric

PATTERN = Path(__file__).parents[1]
DIGITS = sample_digits()
IMAGE_BYTES = 3 * 32 * 32 * 4  # one image as the float32 tensor pred receives


@pytest.fixture(scope="module")
def prep(pattern):
    return pattern.client("prep")


@pytest.fixture(scope="module")
def pred(pattern):
    return pattern.client("pred")


def image(digit: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(DIGITS[digit])))


def encoded(picture: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def received(pred: httpx.Client) -> dict[str, float]:
    kinds = ("application/octet-stream", "application/json", "image", "other", "none")
    counts = {kind: metric(pred, f'prediction_requests_total{{content_type="{kind}"}}') for kind in kinds}
    return {**counts, "bytes": metric(pred, "tensor_bytes_total ")}


def test_every_sample_digit_comes_back_right_through_both_services(prep):
    answer = prep.post("/predict/label", json={"data": list(DIGITS.values())})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"prediction": list(DIGITS)}
    scores = np.array(prep.post("/predict", json={"data": list(DIGITS.values())}).json()["prediction"])
    assert scores.shape == (10, 10)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert scores.argmax(axis=1).tolist() == list(range(10))
    assert prep.get("/predict/test/label").json() == {"prediction": ["0"]}  # the /metadata sample
    assert prep.get("/label").json() == {str(index): str(index) for index in range(10)}  # the model's, from pred


def test_a_batch_gets_what_its_images_get_one_by_one(prep):
    batch = [DIGITS["7"], DIGITS["1"], DIGITS["7"]]
    together = prep.post("/predict", json={"data": batch}).json()["prediction"]
    one_by_one = [prep.post("/predict", json={"data": [item]}).json()["prediction"][0] for item in batch]
    np.testing.assert_allclose(together, one_by_one, atol=1e-6)


@pytest.mark.parametrize(
    "convert",
    [
        lambda picture: picture.convert("L"),  # greyscale
        lambda picture: picture.convert("RGBA"),  # with an alpha channel (opaque)
        lambda picture: picture.convert("P"),  # palette
        lambda picture: picture.resize((96, 96)),  # larger than the model's 32x32
    ],
    ids=["greyscale", "rgba", "palette", "96x96"],
)
def test_images_of_any_common_mode_are_prepared_for_the_model(prep, convert):
    images = [encoded(convert(image(digit))) for digit in DIGITS]
    assert prep.post("/predict/label", json={"data": images}).json() == {"prediction": list(DIGITS)}


def test_a_jpeg_and_a_transparent_png_are_read_too(prep):
    jpeg = encoded(image("4"), "JPEG")
    transparent = image("4").convert("RGBA")
    transparent.putalpha(transparent.convert("L"))  # background transparent: laid on black, as the digits are
    labels = prep.post("/predict/label", json={"data": [jpeg, encoded(transparent)]}).json()
    assert labels == {"prediction": ["4", "4"]}


def test_pred_receives_one_tensor_per_request_and_never_an_image(prep, pred):
    before = received(pred)
    for batch in (list(DIGITS.values()), [DIGITS["2"]], [DIGITS["3"], DIGITS["8"]]):
        assert prep.post("/predict/label", json={"data": batch}).status_code == 200
    after = received(pred)
    assert after["application/octet-stream"] - before["application/octet-stream"] == 3  # one call per request
    assert after["bytes"] - before["bytes"] == 13 * IMAGE_BYTES  # 13 images as raw float32 pixels, not as PNGs
    assert {kind: after[kind] - before[kind] for kind in ("application/json", "image", "other", "none")} == {
        "application/json": 0,
        "image": 0,
        "other": 0,
        "none": 0,
    }


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.02)


def process_group(leader: int) -> list[int]:
    """Every process of the group that `leader` leads (a service: gunicorn's master and its workers)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # gone meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == leader:  # the field after the state: the group id
                members.append(int(entry))
    return members


def loads(pid: int, library: str) -> bool:
    return library in Path(f"/proc/{pid}/maps").read_text()


def test_the_prep_processes_load_no_model_runtime_and_pred_no_image_library(pattern, prep):
    prep_leader, pred_leader = pattern.run.processes("prep")[0].pid, pattern.run.processes("pred")[0].pid

    def workers_loaded(leader: int, library: str) -> bool:  # gunicorn's master imports no app: its two workers do
        return sum(loads(pid, library) for pid in process_group(leader)) == 2

    # A service is healthy once one worker answers; the other may still be importing.
    wait_for(lambda: workers_loaded(prep_leader, "PIL/_imaging") and workers_loaded(pred_leader, "onnxruntime"), 60)
    prep.post("/predict/label", json={"data": list(DIGITS.values())})  # both services have worked
    prep_pids, pred_pids = process_group(prep_leader), process_group(pred_leader)
    assert len(prep_pids) == len(pred_pids) == 3  # master and two workers, each service
    assert not any(loads(pid, "onnxruntime") for pid in prep_pids)
    assert not any(loads(pid, "PIL/_imaging") for pid in pred_pids)
    assert prep.get("/metadata").json()["onnxruntime_imported"] is False  # what prep says of itself


def test_each_service_shows_its_own_side(prep, pred):
    prep_view = prep.get("/metadata").json()
    assert prep_view["data_sample"] == [DIGITS["0"]]
    assert prep_view["preprocess"] == {
        "image_shape": [3, 32, 32],
        "tensor": "float32, sent as application/octet-stream",
        "bytes_per_image": IMAGE_BYTES,
    }
    pred_view = pred.get("/metadata").json()
    assert pred_view["model"] == "cifar10"
    assert pred_view["input"] == {"name": "input", "dtype": "float32", "shape": ["N", 3, 32, 32]}
    assert pred_view["request"] == {
        "content_type": "application/octet-stream",
        "headers": {"X-Tensor-Shape": "N,3,32,32", "X-Tensor-Dtype": "float32"},
        "max_items": 256,
    }


def test_pred_answers_a_tensor_with_probabilities_and_labels(pred):
    pixels = np.zeros((2, 3, 32, 32), np.float32)
    pixels[1, :, 8:24, 15:17] = 255.0  # a vertical stroke
    body, headers = encode_tensor(pixels)
    answer = pred.post("/predict", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    content = answer.json()
    assert content["model"] == "cifar10" and len(content["labels"]) == 2
    scores = np.array(content["prediction"])
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert content["labels"] == [str(index) for index in scores.argmax(axis=1)]


TENSOR, HEADERS = encode_tensor(np.zeros((2, 3, 32, 32), np.float32))


@pytest.mark.parametrize(
    "content, headers, status, message",
    [
        (b'{"data": ["iVBORw0KGgo="]}', {"Content-Type": "application/json"}, 415, "not application/json"),
        (base64.b64decode(DIGITS["5"]), {"Content-Type": "image/png"}, 415, "the body must be a tensor"),
        (TENSOR, {**HEADERS, "Content-Type": "text/plain"}, 415, "not text/plain"),
        (TENSOR[:-1], HEADERS, 422, "a float32 tensor of shape 2x3x32x32 has 24576 bytes; the body has 24575"),
        (TENSOR, {**HEADERS, "X-Tensor-Shape": "2,3,64,16"}, 422, "the model takes tensors of shape N,3,32,32; got"),
        (TENSOR, {**HEADERS, "X-Tensor-Shape": "6,32,32"}, 422, "the model takes tensors of shape N,3,32,32; got"),
        (TENSOR, {**HEADERS, "X-Tensor-Shape": "1,3,32,32", "X-Tensor-Dtype": "float64"}, 422, "takes float32"),
        (TENSOR, {**HEADERS, "X-Tensor-Dtype": "int32"}, 422, "the model takes float32 tensors; got int32"),
        (TENSOR, {k: v for k, v in HEADERS.items() if k != "X-Tensor-Shape"}, 422, "X-Tensor-Shape header is missing"),
        (b"", {**HEADERS, "X-Tensor-Shape": "0,3,32,32"}, 422, "data must hold at least one item"),
        (
            np.full((1, 3, 32, 32), np.nan, np.float32).tobytes(),
            {**HEADERS, "X-Tensor-Shape": "1,3,32,32"},
            422,
            "finite",
        ),
        (np.zeros((257, 3, 32, 32), np.float32).tobytes(), {**HEADERS, "X-Tensor-Shape": "257,3,32,32"}, 413, "257"),
    ],
    ids=[
        "json",
        "png",
        "text",
        "short body",
        "wrong image size",
        "no batch axis",
        "dtype of other size",
        "dtype of same size",
        "no shape",
        "empty batch",
        "nan",
        "too many images",
    ],
)
def test_pred_refuses_anything_but_a_tensor_of_the_model_with_its_problem(pred, content, headers, status, message):
    assert_refused(pred.post("/predict", content=content, headers=headers), status, message)
    assert_healthy(pred)


def test_refused_bodies_are_counted_by_their_media_type(pred):
    before = received(pred)
    pred.post("/predict", content=base64.b64decode(DIGITS["5"]), headers={"Content-Type": "image/jpeg"})
    pred.post("/predict", json={"data": [DIGITS["5"]]})
    pred.post("/predict", content=TENSOR, headers={"Content-Type": "application/x-anything"})
    after = received(pred)
    assert {kind: after[kind] - before[kind] for kind in ("image", "application/json", "other", "bytes")} == {
        "image": 1,
        "application/json": 1,
        "other": 1,
        "bytes": 0,  # nothing of them was predicted
    }


@pytest.mark.parametrize(
    "data, status, message",
    [
        (["not base64!"], 422, "item 0 is not base64"),
        ([DIGITS["1"], base64.b64encode(b"just text").decode()], 422, "item 1 is not an image Pillow can read"),
        ([""], 422, "item 0 is empty"),
        ([], 422, None),
        ([DIGITS["1"]] * 65, 413, "data has 65 items; at most 64 are accepted"),
    ],
    ids=["not base64", "not an image", "empty string", "empty batch", "too many images"],
)
def test_prep_refuses_bad_images_before_calling_pred(prep, pred, data, status, message):
    before = received(pred)["application/octet-stream"]
    assert_refused(prep.post("/predict/label", json={"data": data}), status, message)
    assert received(pred)["application/octet-stream"] == before
    assert_healthy(prep)


def refuses_connections(url: str) -> bool:
    try:
        httpx.get(url + "/health", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:  # accepted but not answered: a gunicorn that has bound its port, starting
        pass
    return False


def answers(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_with_pred_down_prep_stays_up_and_says_why_then_recovers(pattern, prep):
    pred_url = pattern.url("pred")
    pattern.run.kill("pred")  # SIGKILL to gunicorn's master: the runner stops its workers, then restarts it
    wait_for(lambda: refuses_connections(pred_url), timeout=30)
    # pred comes back 0.5 s later at the earliest (the runner's backoff, then its start); these take milliseconds.
    down = prep.post("/predict/label", json={"data": [DIGITS["6"]]})
    test_down = prep.get("/predict/test/label")
    assert_healthy(prep)
    assert prep.get("/metadata").status_code == 200  # prep's own view needs no model
    assert down.status_code == 503, down.text
    assert down.json()["detail"].startswith("upstream 'pred' is unavailable (")
    assert test_down.status_code == 503, test_down.text
    assert test_down.json()["detail"].startswith("upstream 'pred' is unavailable (")

    wait_for(lambda: answers(pred_url), timeout=60)  # restart: unless-stopped
    assert prep.post("/predict/label", json={"data": [DIGITS["6"]]}).json() == {"prediction": ["6"]}
    assert pattern.run.failure is None
