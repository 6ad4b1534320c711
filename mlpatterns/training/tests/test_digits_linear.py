"""The fast digits model: trained deterministically, takes the CNN's input, reads the shipped sample digits."""

import json

import numpy as np
import onnxruntime as ort

from mlpatterns.images import ImagePreprocessor, sample_digits
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.training import digits_linear


def test_trains_deterministically_and_skips_an_up_to_date_model(tmp_path, caplog):
    first = digits_linear.build(tmp_path / "a")
    second = digits_linear.build(tmp_path / "b")
    assert json.loads(first.metrics.read_text()) == json.loads(second.metrics.read_text())
    metrics = json.loads(first.metrics.read_text())
    assert metrics["accuracy"] > 0.93 and metrics["onnx_agreement"] == 1.0
    stamp = first.model.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        digits_linear.build(tmp_path / "a")
    assert "digits_linear: up to date" in caplog.text
    assert first.model.stat().st_mtime_ns == stamp


def test_takes_the_cnn_input_and_reads_every_sample_digit(tmp_path):
    artifacts = digits_linear.build(tmp_path)
    predictor = OnnxPredictor(artifacts.model, artifacts.labels).load()
    assert predictor.feature_shape == [3, 32, 32]  # the digits CNN's input item: one decoded image feeds both
    digits = sample_digits()
    images = ImagePreprocessor(shape=(3, 32, 32))([digits[label] for label in sorted(digits)])
    prediction = predictor.predict(images)
    assert [predictor.label_of(index) for index in prediction.classes] == sorted(digits)
    assert np.allclose(prediction.scores.sum(axis=1), 1.0, atol=1e-5)


def test_the_model_pools_as_training_did():
    """The ONNX graph's pooling nodes against the numpy pooling the classifier was fitted on."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 3, 32, 32)).astype(np.float32)
    graph = digits_linear.pooling_graph("features", ir_version=8)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    (features,) = session.run(None, {"images": images})
    assert np.allclose(features, digits_linear.pooled(images), atol=1e-4)
