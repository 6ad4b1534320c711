"""The SVC model that web single and most later patterns serve."""

import json

import numpy as np
import onnxruntime as ort

from mlpatterns.training import iris


def test_svc_is_accurate_and_its_onnx_export_agrees(tmp_path):
    artifacts = iris.build("svc", out=tmp_path)
    metrics = json.loads(artifacts.metrics.read_text())
    assert metrics["accuracy"] >= 0.9
    assert metrics["onnx_agreement"] == 1.0
    assert set(metrics["per_class"]) >= {"setosa", "versicolor", "virginica"}
    session = ort.InferenceSession(str(artifacts.model))
    labels, probabilities = session.run(None, {"X": np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], np.float32)})
    assert labels.tolist() == [0, 2]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities.argmax(axis=1) == labels).all()
