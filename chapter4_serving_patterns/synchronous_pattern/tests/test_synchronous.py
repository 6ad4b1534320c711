"""End to end: the synchronous pattern's model server started by the local runner, as `make up` starts it, and
its command-line client run as a process, as a user runs it.

Generic bad input (malformed JSON, wrong types, oversized bodies) is the repo-wide tests/test_bad_input.py's; here
the pattern's own answers: every sample digit comes back right in every request form TF Serving has, and the bad
images the issue names are 4xx that say what is wrong."""

import base64
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mlpatterns.images import sample_digits
from mlpatterns.testing import assert_healthy, assert_refused, start_pattern

PATTERN = Path(__file__).parents[1]
REPO_ROOT = PATTERN.parents[1]
DIGITS = sample_digits()  # {"0": base64 PNG, ..., "9": ...}
PREDICT = "/v1/models/digits:predict"


@pytest.fixture(scope="module")
def serving(pattern):
    return pattern.client("serving")


def test_model_status_and_metadata_in_tf_servings_shapes(serving):
    available = {"version": "0", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    for path in ("/v1/models/digits", "/v1/models/digits/versions/0"):
        assert serving.get(path).json() == {"model_version_status": [available]}
    for path in ("/v1/models/digits/metadata", "/v1/models/digits/versions/0/metadata"):
        metadata = serving.get(path).json()
        assert metadata["model_spec"] == {"name": "digits", "signature_name": "", "version": "0"}
        signatures = metadata["metadata"]["signature_def"]["signature_def"]
        assert set(signatures) == {"serving_default", "probabilities"}
        default = signatures["serving_default"]
        assert default["inputs"]["image"]["dtype"] == "DT_STRING"
        assert default["outputs"]["output_0"]["dtype"] == "DT_STRING"
        dims = signatures["probabilities"]["outputs"]["probabilities"]["tensor_shape"]["dim"]
        assert [d["size"] for d in dims] == ["-1", "10"]


def test_every_sample_digit_comes_back_right_in_one_batch(serving):
    answer = serving.post(PREDICT, json={"instances": list(DIGITS.values())})
    assert answer.json() == {"predictions": list(DIGITS)}
    assert serving.get("/predict/test").json() == {"predictions": list(DIGITS)}


@pytest.mark.parametrize("digit", list(DIGITS))
def test_each_sample_digit_comes_back_right_in_every_request_form(serving, digit):
    image = DIGITS[digit]
    url_safe = base64.urlsafe_b64encode(base64.b64decode(image)).decode()  # what the original's client sent
    row_forms = [image, {"b64": image}, {"image": image}, {"image": {"b64": image}}, url_safe]
    for instance in row_forms:
        answer = serving.post(PREDICT, json={"instances": [instance]})
        assert answer.json() == {"predictions": [digit]}, instance if len(str(instance)) < 20 else type(instance)
    for inputs in ([image], {"image": [{"b64": image}]}):
        assert serving.post("/v1/models/digits/versions/0:predict", json={"inputs": inputs}).json() == {
            "outputs": [digit]
        }


def test_the_probabilities_signature_answers_the_class_probabilities(serving):
    body = {"signature_name": "probabilities", "instances": list(DIGITS.values())}
    rows = serving.post(PREDICT, json=body).json()["predictions"]
    assert len(rows) == 10
    for digit, row in zip(DIGITS, rows, strict=True):
        assert len(row) == 10
        assert sum(row) == pytest.approx(1.0, abs=1e-5)
        assert max(range(10), key=row.__getitem__) == int(digit)


def test_bad_images_are_4xx_that_say_what_is_wrong_and_the_server_keeps_serving(serving):
    not_an_image = base64.b64encode(b"just some text, no image").decode()
    cases = [
        ({"instances": [not_an_image]}, 422, "item 0 is not an image Pillow can read"),
        ({"instances": [""]}, 422, "item 0 is empty"),
        ({"instances": [DIGITS["1"], {"b64": "%%%"}]}, 422, "item 1 is not base64"),
        ({"inputs": {"image": [not_an_image]}}, 422, "item 0 is not an image"),
        ({}, 422, "'instances' (row format) or as 'inputs' (columnar format)"),
        ({"instances": [DIGITS["1"]], "inputs": [DIGITS["1"]]}, 422, "one of the two"),
        ({"instances": [DIGITS["1"]], "signature_name": "scores"}, 422, "String should match pattern"),
        ({"instances": [DIGITS["1"]] * 257}, 413, "257 images in one request; at most 256 are accepted"),
    ]
    for body, status, message in cases:
        assert_refused(serving.post(PREDICT, json=body), status, message)
    fifty_megabytes = b'{"instances": ["' + b"A" * (50 * 1024 * 1024) + b'"]}'
    refused = serving.post(PREDICT, content=fifty_megabytes, headers={"content-type": "application/json"})
    assert_refused(refused, 413, "request body is larger than 8388608 bytes")
    assert_healthy(serving)
    assert serving.post(PREDICT, json={"instances": [DIGITS["8"]]}).json() == {"predictions": ["8"]}


def test_another_model_or_version_is_a_404_that_names_what_is_served(serving):
    for method, path in [("POST", "/v1/models/inception_v3:predict"), ("GET", "/v1/models/digits/versions/3")]:
        refused = serving.request(method, path, json={"instances": [DIGITS["0"]]} if method == "POST" else None)
        assert_refused(refused, 404, f"no model at {path}: this server serves 'digits', version 0")
    wrong_method = serving.post("/v1/models/digits")
    assert_refused(wrong_method, 405)
    assert wrong_method.headers["allow"] == "GET"


def test_the_model_name_and_version_are_settings():
    with start_pattern(PATTERN, overrides={"serving": {"MODEL_NAME": "mnist", "MODEL_VERSION": "2"}}) as run:
        serving = run.client("serving")
        answer = serving.post("/v1/models/mnist/versions/2:predict", json={"instances": [DIGITS["4"]]})
        assert answer.json() == {"predictions": ["4"]}
        assert serving.get("/v1/models/mnist").json()["model_version_status"][0]["version"] == "2"
        assert_refused(serving.get("/v1/models/digits"), 404, "this server serves 'mnist', version 2")


# -- the client, run as a user runs it ------------------------------------------------------------------------


def run_client(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "chapter4_serving_patterns.synchronous_pattern.client", *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def test_the_client_prints_the_label_and_latency_of_every_sample_digit(pattern, tmp_path):
    for digit, image in DIGITS.items():
        path = tmp_path / f"{digit}.png"
        path.write_bytes(base64.b64decode(image))
        result = run_client("--image", str(path), "--url", pattern.url("serving"))
        assert result.returncode == 0, result.stderr
        label, latency = result.stdout.splitlines()
        assert label == f"label: {digit}"
        assert re.fullmatch(r"latency: \d+\.\d ms", latency), latency


def test_the_client_prints_the_metadata(pattern):
    result = run_client("--metadata", "--url", pattern.url("serving"))
    assert result.returncode == 0, result.stderr
    assert '"output_0"' in result.stdout and '"name": "digits"' in result.stdout


def test_the_client_exits_nonzero_with_the_servers_reason_when_refused(pattern, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("no image here")
    result = run_client("--image", str(text), "--url", pattern.url("serving"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: the server refused the request (422): item 0 is not an image")
    missing = run_client("--image", str(tmp_path / "missing.png"), "--url", pattern.url("serving"))
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        f"error: cannot read {tmp_path / 'missing.png'}: No such file or directory",
    )


def test_the_client_exits_nonzero_when_the_server_is_down_or_silent(tmp_path):
    image = tmp_path / "3.png"
    image.write_bytes(base64.b64decode(DIGITS["3"]))
    with socket.socket() as listener:  # listens, never answers: a server hung mid-request
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        silent = run_client("--image", str(image), "--url", f"http://127.0.0.1:{port}", "--timeout", "0.5")
    assert silent.returncode == 1
    assert silent.stderr.strip() == f"error: no answer from http://127.0.0.1:{port} within 0.5 s"
    down = run_client("--image", str(image), "--url", f"http://127.0.0.1:{port}")  # closed now: refused
    assert down.returncode == 1
    assert down.stderr.startswith(f"error: cannot reach http://127.0.0.1:{port}")
