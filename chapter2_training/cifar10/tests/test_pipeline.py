"""The cifar10 pipeline end to end on digits: each step a process of its own in a directory of its own, handing
over by path only, the accuracy measured through the served model's HTTP API."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
import torch  # installed by `make setup` (the lock's [torch] category)

from chapter2_training.cifar10 import pipeline
from mlpatterns.registry import ModelRegistry
from mlpatterns.testing import start_pattern
from mlpatterns.training import cnn, images

REPO_ROOT = Path(__file__).resolve().parents[3]
TIME_LIMIT = 180  # seconds for all four steps on a 2-core machine


def step(*args) -> str:
    env = {key: value for key, value in os.environ.items() if key != "MODEL_DB_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "chapter2_training.cifar10.pipeline", *map(str, args)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("cifar10")
    data, model, served = work / "preprocess", work / "train", work / "build"
    report = work / "evaluate" / "evaluation.json"
    started = time.perf_counter()
    output = {
        "preprocess": step("preprocess", "--out", data),
        "train": step("train", "--in", data, "--out", model),
        "build": step("build", "--in", model, "--out", served),
        "evaluate": step("evaluate", "--in", served, "--data", data, "--out", report),
    }
    seconds = time.perf_counter() - started
    print(f"\npipeline on digits: {seconds:.1f} s\n" + "".join(output.values()))
    return SimpleNamespace(seconds=seconds, data=data, model=model, served=served, report=report, output=output)


def test_pipeline_on_digits_is_accurate_through_the_service_and_quick(run):
    report = json.loads(run.report.read_text())
    assert report["accuracy"] >= 0.95
    assert run.seconds < TIME_LIMIT
    assert report["test_images"] == 269 and report["requests"] == 9
    assert set(report["per_class"]) == {str(d) for d in range(10)}
    assert all(s["f1-score"] > 0.8 for s in report["per_class"].values())
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] and report["images_per_second"] > 0
    assert f"evaluate: accuracy {report['accuracy']:.4f}" in run.output["evaluate"]
    assert "model_db: not configured (set MODEL_DB_URL to register this run)" in run.output["evaluate"]


def test_steps_hand_over_by_path(run):
    description = json.loads((run.data / "dataset.json").read_text())
    assert description["image_shape"] == [3, 32, 32] and description["classes"] == [str(d) for d in range(10)]
    assert {n: s["count"] for n, s in description["splits"].items()} == {"train": 1300, "val": 228, "test": 269}
    assert description["normalisation"]["computed_on"] == "train"
    metrics = json.loads((run.model / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4, 5, 6]
    assert metrics["val_accuracy"] == metrics["epochs"][-1]["val_accuracy"] >= 0.95
    assert metrics["onnx_agreement"] == 1.0 and metrics["onnx_max_abs_diff"] < 1e-4
    assert metrics["params"]["data"] == {n: s["sha256"] for n, s in description["splits"].items()}
    # build put the trained model where it is served
    for name in ("model.onnx", "model.onnx.sha256", "labels.json", "metrics.json"):
        assert (run.served / name).read_bytes() == (run.model / name).read_bytes()
    assert json.loads(run.report.read_text())["model"] == str(run.served)


def test_an_up_to_date_model_is_not_retrained(run):
    stamp = (run.model / "model.onnx").stat().st_mtime_ns
    assert "train: up to date" in step("train", "--in", run.data, "--out", run.model)
    assert (run.model / "model.onnx").stat().st_mtime_ns == stamp


def test_training_is_deterministic(run, tmp_path):
    step("train", "--in", run.data, "--out", tmp_path / "again")
    assert (tmp_path / "again" / "model.onnx").read_bytes() == (run.model / "model.onnx").read_bytes()


def test_a_step_without_its_input_says_what_to_run(tmp_path, capsys):
    assert pipeline.main(["train", "--in", str(tmp_path / "none"), "--out", str(tmp_path / "model")]) == 1
    assert "run the preprocess step into it first" in capsys.readouterr().err
    assert pipeline.main(["build", "--in", str(tmp_path / "none"), "--out", str(tmp_path / "served")]) == 1
    assert "run the train step" in capsys.readouterr().err


# -- the model: trained in train mode, normalisation inside the exported graph ---------------------------


def tiny_set(count: int, seed: int = 0) -> images.ImageSet:
    rng = np.random.default_rng(seed)
    return images.ImageSet(
        rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, count).astype(np.int64)
    )


def test_batches_train_in_train_mode_and_validation_runs_in_eval_mode():
    model = cnn.small_cnn([120.0] * 3, [60.0] * 3, 10)
    modes = []
    model[2].register_forward_hook(lambda module, inputs, output: modes.append(module.training))  # batch norm
    cnn.fit(model, tiny_set(64), tiny_set(16, seed=1), cnn.TrainConfig(epochs=1, batch_size=32))
    assert modes == [True, True, False]  # two training batches, then one validation batch
    assert not model.training


def test_onnx_model_takes_raw_pixels_and_gives_the_torch_logits():
    mean, std = [100.0, 110.0, 120.0], [50.0, 60.0, 70.0]
    model = cnn.small_cnn(mean, std, 10)
    cnn.fit(model, tiny_set(64), tiny_set(16, seed=1), cnn.TrainConfig(epochs=1))  # batch norm has running stats
    session = ort.InferenceSession(cnn.export_onnx(model), providers=["CPUExecutionProvider"])
    pixels = tiny_set(5, seed=2).images.astype(np.float32)  # raw 0..255, as a client sends them
    probabilities, logits = session.run(["probabilities", "logits"], {"input": pixels})
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(pixels)).numpy()
        by_hand = model[1:](
            torch.from_numpy(
                (pixels - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
            )
        ).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    np.testing.assert_allclose(logits, by_hand, atol=1e-4)  # the graph's first step is the training normalisation
    np.testing.assert_allclose(probabilities, torch.softmax(torch.from_numpy(expected), 1).numpy(), atol=1e-5)
    assert session.get_inputs()[0].shape == ["batch", 3, 32, 32]


# -- the served model: every image of a batch answered; a wrong image a 422 naming its shape --------------
# (empty batches, missing keys, NaN, oversized bodies...: tests/test_bad_input.py, for every service)


@pytest.fixture(scope="module")
def service(run):
    served = {pipeline.SERVICE: {"MODEL_PATH": str(run.served / "model.onnx")}}
    with start_pattern(pipeline.PATTERN_DIR, overrides=served) as started:
        yield started.client(pipeline.SERVICE)


def test_service_answers_every_image_of_a_batch(service, run):
    test = images.read_split(run.data, "test")
    assert service.get("/label").json() == {str(d): str(d) for d in range(10)}
    batch = test.images[:8]
    labels = service.post("/predict/label", json={"data": batch.tolist()}).json()["prediction"]
    one_by_one = [
        service.post("/predict/label", json={"data": [picture.tolist()]}).json()["prediction"][0] for picture in batch
    ]
    assert labels == one_by_one
    session = ort.InferenceSession(str(run.served / "model.onnx"), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"input": batch.astype(np.float32)})
    assert labels == [str(d) for d in probabilities.argmax(axis=1)]
    scores = service.post("/predict", json={"data": batch.tolist()}).json()["prediction"]
    np.testing.assert_allclose(scores, probabilities, atol=1e-5)


def test_metadata_and_the_sample_prediction(service):
    metadata = service.get("/metadata").json()
    assert metadata["data_structure"] == "(1, 3, 32, 32)" and metadata["data_sample"] == [image()]
    assert metadata["prediction_structure"] == "(1, 10)"
    assert metadata["prediction_sample"] == service.get("/predict/test").json()["prediction"]
    (label,) = service.get("/predict/test/label").json()["prediction"]
    assert service.post("/predict/label", json={"data": [image()]}).json() == {"prediction": [label]}


def image(channels: int = 3, size: int = 32) -> list:
    return np.zeros((channels, size, size), dtype=int).tolist()


def ragged() -> list:
    picture = image()
    picture[1][5] = picture[1][5][:-1]
    return picture


@pytest.mark.parametrize(
    "body, message",
    [
        ({"data": [image(channels=1)]}, "each item must have shape 3x32x32; got items of shape 1x32x32"),
        ({"data": [image(size=28)]}, "each item must have shape 3x32x32; got items of shape 3x28x28"),
        ({"data": [ragged()]}, "data must be a list of items of equal shape (3x32x32), each nested lists of numbers"),
        ({"data": [[0] * 3072]}, "valid list"),
        ({"data": image()}, "valid list"),
        ({"data": [[[["255"] * 32] * 32] * 3]}, "valid number"),
    ],
    ids=["one channel", "28x28", "ragged", "flat row", "no batch axis", "strings"],
)
def test_wrong_input_is_a_422_with_a_clear_message(service, body, message):
    for path in ("/predict", "/predict/label"):
        response = service.post(path, json=body)
        assert response.status_code == 422, response.text
        assert message in json.dumps(response.json()["detail"])
        assert len(response.content) < 500  # the first error only, not one per pixel
    assert service.get("/health").json() == {"health": "ok"}


def test_too_many_images_is_a_413(service):
    response = service.post("/predict", json={"data": [image()] * 257})
    assert response.status_code == 413
    assert response.json() == {"detail": "data has 257 items; at most 256 are accepted"}


def test_a_run_is_registered_in_model_db_when_it_is_configured(service, run, tmp_path, monkeypatch):
    with start_pattern(REPO_ROOT / "chapter2_training" / "model_db") as model_db:
        monkeypatch.setenv("MODEL_DB_URL", model_db.url("model_db"))
        report = pipeline.evaluate(run.served, run.data, tmp_path / "evaluation.json", url=str(service.base_url))
        with ModelRegistry(model_db.url("model_db")) as registry:
            experiment = registry.latest_experiment("cifar10", "small_cnn")
    metrics = json.loads((run.served / "metrics.json").read_text())
    assert experiment["model_version_id"] == f"small_cnn-{metrics['fingerprint']}"
    assert experiment["parameters"]["epochs"] == 6
    assert experiment["evaluations"]["test_accuracy"] == report["accuracy"]
    assert experiment["artifact_file_paths"]["model"] == str((run.served / "model.onnx").resolve())
    assert experiment["test_dataset"] == str((run.data / "test.npz").resolve())
