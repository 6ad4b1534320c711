"""The one-class SVM: its metric is the real share of outliers (the original logged 1 - 2 x that share)."""

import json

from mlpatterns.predictor import OnnxPredictor
from mlpatterns.training import iris


def test_outlier_rate_is_close_to_nu_and_obvious_outliers_are_flagged(tmp_path):
    artifacts = iris.build("outlier", out=tmp_path)
    metrics = json.loads(artifacts.metrics.read_text())
    assert 0.05 <= metrics["outlier_rate"] <= 0.15  # nu = 0.1 bounds the training outlier share
    assert metrics["onnx_agreement"] == 1.0
    predictor = OnnxPredictor(artifacts.model, artifacts.labels).load()
    prediction = predictor.predict([[5.1, 3.5, 1.4, 0.2], [1.0, 2.0, 3.0, 4.0], [50.0, 30.1, 111.4, 110.2]])
    assert [predictor.label_of(c) for c in prediction.classes] == ["inlier", "outlier", "outlier"]
