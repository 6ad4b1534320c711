"""End to end: the router (the machine's HAProxy on haproxy.cfg) and both models started by the local runner, as
`make up` starts them, and the client run as a process, as a user runs it.

The pattern's promise: every request whose `target` header is exactly "speech" is answered by the words model, and
only by it; every other request by the digits model, and only by it; a route whose model does not answer within
10 s is a 504, and never falls over to the other model. Who answered is read three ways: the answer's `model`,
its label (each model has its own label set) and each model's count of predictions on /metrics."""

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chapter6_operation_management.condition_based_pattern.demo import WORDS, demo
from mlpatterns.demo import DemoClient
from mlpatterns.image_jobs import SAMPLE
from mlpatterns.testing import assert_healthy, assert_refused, read_metrics, start_pattern

PATTERN = Path(__file__).parents[1]
REPO_ROOT = PATTERN.parents[1]
SPEECH = {"target": "speech"}

# Requests the VirtualService's `exact: speech` matches, and requests it does not (so the default route takes them).
MATCHED = [
    [("target", "speech")],
    [("TARGET", "speech")],  # header names are case-insensitive, in HTTP, Envoy and HAProxy alike
    [("Target", "speech"), ("x-target", "plant")],
]
NOT_MATCHED = [
    [],
    [("target", "plant")],  # what the original's client sent
    [("target", "mountain")],  # what the original's VirtualService matched
    [("target", "Speech")],  # the value is compared exactly
    [("target", "speeches")],
    [("target", "")],
    [("target", "speech,words")],  # one value, not a list of values
    [("target", "speech"), ("target", "speech")],  # two headers: Envoy sees "speech,speech"
    [("x-target", "speech")],
]


@pytest.fixture(scope="module")
def proxy(pattern):
    return pattern.client("proxy")


def predictions(pattern) -> dict[str, float]:
    """Each model's count of model calls, from its own /metrics."""
    prefix = 'model_stage_seconds_count{{model="{}",stage="model"}}'
    return read_metrics(pattern, {name: (name, prefix.format(name)) for name in ("digits", "words")})


def post(proxy, image: str, headers: list[tuple[str, str]]):
    response = proxy.post("/predict", json={"image_data": image}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_header_sends_each_image_to_the_words_model_and_its_absence_to_the_digits_model(pattern, proxy):
    before = predictions(pattern)
    for digit, image in SAMPLE.items():
        plain = post(proxy, image, [])
        spoken = post(proxy, image, [("target", "speech")])
        assert (plain["model"], plain["prediction"]) == ("digits", digit)
        assert (spoken["model"], spoken["prediction"]) == ("words", WORDS[int(digit)])
        assert len(plain["scores"]) == len(spoken["scores"]) == 10
    after = predictions(pattern)
    assert {name: after[name] - before[name] for name in after} == {"digits": 10, "words": 10}


ROUTED = [(headers, "words") for headers in MATCHED] + [(headers, "digits") for headers in NOT_MATCHED]
LABELS = {"words": WORDS, "digits": [str(digit) for digit in range(10)]}


@pytest.mark.parametrize("headers, model", ROUTED, ids=[f"{h}->{m}" for h, m in ROUTED])
def test_every_request_is_answered_by_its_routes_model_only(pattern, proxy, headers, model):
    before = predictions(pattern)
    for image in list(SAMPLE.values()) * 2:
        answer = post(proxy, image, headers)
        assert answer["model"] == model and answer["prediction"] in LABELS[model]
    after = predictions(pattern)
    asked = {name: after[name] - before[name] for name in after}
    assert asked == {"digits": 0, "words": 0, model: 20}  # the other model was not asked once


def test_every_route_of_the_models_follows_the_condition(proxy):
    assert proxy.get("/predict/test").json()["prediction"] == "7"
    assert proxy.get("/predict/test", headers=SPEECH).json()["prediction"] == "seven"
    assert proxy.get("/label").json() == {str(d): str(d) for d in range(10)}
    assert proxy.get("/label", headers=SPEECH).json() == {str(d): word for d, word in enumerate(WORDS)}
    assert proxy.get("/metadata").json()["data_sample"] == [SAMPLE["7"]]
    assert proxy.get("/metadata", headers=SPEECH).json()["prediction_structure"] == "(1, 10)"
    assert proxy.get("/health", headers=SPEECH).json() == {"health": "ok"}


def test_bad_images_are_refused_by_the_model_the_request_reached(pattern, proxy):
    before = predictions(pattern)
    for headers in ([], [("target", "speech")]):
        cases = [
            ({"image_data": "not base64!"}, "image_data is not base64 (standard alphabet, padded)"),
            ({"image_data": "aGVsbG8="}, "image_data is not an image Pillow can read"),
            ({"image_data": ""}, "String should have at least 1 character"),
            ({"data": [SAMPLE["1"]]}, "Field required"),
        ]
        for body, message in cases:
            assert_refused(proxy.post("/predict", json=body, headers=headers), 422, message)
        assert_healthy(proxy)
    after = predictions(pattern)
    assert after == before  # no model was asked


def test_the_client_checks_who_answered(pattern):
    def client(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "chapter6_operation_management.condition_based_pattern.client", *args]
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    url = pattern.url("proxy")
    spoken = client("--url", url, "--target", "speech", "--expect", "words")
    assert spoken.returncode == 0, spoken.stderr
    assert spoken.stdout.splitlines() == [f"{d} -> words: {WORDS[d]!r}" for d in range(10)] + [
        "10 answers, 10 from words"
    ]
    plain = client("--url", url, "--expect", "digits")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[-1] == "10 answers, 10 from digits"
    # The original's client: `target: plant` never matched, and every answer came from the general model.
    original = client("--url", url, "--target", "plant", "--expect", "words")
    assert original.returncode == 1
    assert original.stderr.strip() == "error: expected every answer from words, got 10 from digits"


def test_the_demo_shows_one_image_answered_by_each_model(pattern, capsys):
    client = DemoClient({"proxy": pattern.url("proxy")})
    try:
        demo(client)
    finally:
        client.close()
    assert (client.unexpected, client.server_errors, client.refused) == ([], 0, 3)
    printed = capsys.readouterr().out
    assert "POST proxy/predict  target: speech  {" in printed  # the header is shown with its request
    assert '-> 200 {"model": "words", "prediction": "seven"' in printed
    assert '-> 200 {"model": "digits", "prediction": "7"' in printed
    for digit, word in enumerate(WORDS):
        assert f"digit {digit}:  no header -> digits '{digit}'" in printed
        assert f"target: speech -> words  '{word}'" in printed


# -- the route timeout and a model that is down: never the other model -----------------------------------------


def test_a_model_that_does_not_answer_within_10_s_is_a_504_and_the_other_route_keeps_answering():
    with socket.socket() as silent:  # accepts and never answers: a model hung mid-request
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with start_pattern(PATTERN, overrides={"proxy": {"WORDS_ADDRESS": address}}) as started:
            proxy = started.client("proxy")
            result = {}

            def hung_request():
                start = time.monotonic()
                result["response"] = proxy.post("/predict", json={"image_data": SAMPLE["4"]}, headers=SPEECH)
                result["seconds"] = time.monotonic() - start

            waiting = threading.Thread(target=hung_request)
            waiting.start()
            while waiting.is_alive():  # meanwhile the default route answers as ever
                assert post(proxy, SAMPLE["4"], [])["model"] == "digits"
                time.sleep(0.5)
            waiting.join()
            assert result["response"].status_code == 504
            assert 10.0 <= result["seconds"] < 30, result["seconds"]  # HAProxy's `timeout server 10s`, not sooner


def test_a_model_that_is_down_is_a_503_on_its_route_only():
    with socket.socket() as closed:  # a port nothing listens on: a model that is down
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        with start_pattern(PATTERN, overrides={"proxy": {"WORDS_ADDRESS": address}}) as started:
            proxy = started.client("proxy")
            response = proxy.post("/predict", json={"image_data": SAMPLE["5"]}, headers=SPEECH)
            assert response.status_code == 503  # never the digits model's "5": a speech client gets no digit
            assert post(proxy, SAMPLE["5"], [])["prediction"] == "5"
