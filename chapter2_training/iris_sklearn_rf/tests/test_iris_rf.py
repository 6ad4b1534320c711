"""The random forest model (the challenger of the A/B and shadow patterns)."""

import json

import numpy as np
import onnxruntime as ort

from mlpatterns.training import iris


def test_random_forest_is_accurate_and_its_onnx_export_agrees(tmp_path):
    artifacts = iris.build("rf", out=tmp_path)
    metrics = json.loads(artifacts.metrics.read_text())
    assert metrics["accuracy"] >= 0.9
    assert metrics["onnx_agreement"] == 1.0
    session = ort.InferenceSession(str(artifacts.model))
    labels, probabilities = session.run(None, {"X": np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)})
    assert labels.tolist() == [0]
    assert probabilities[0, 0] > 0.95
