"""OnnxPredictor on small models built in tmp_path: a classifier, a one-class model, a logits-only graph."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from mlpatterns.errors import InvalidInput
from mlpatterns.predictor import OnnxPredictor


@pytest.fixture
def classifier(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 3)).astype(np.float32)
    classes = (features[:, 0] > 0).astype(np.int64)
    model = LogisticRegression().fit(features, classes)
    onx = to_onnx(model, features[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    (tmp_path / "model.onnx").write_bytes(onx.SerializeToString())
    (tmp_path / "labels.json").write_text(json.dumps({"0": "negative", "1": "positive"}))
    return OnnxPredictor(tmp_path / "model.onnx", tmp_path / "labels.json").load(), model


def test_predicts_every_row_with_labels(classifier):
    predictor, model = classifier
    rows = [[2.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [1.5, 1.0, -1.0]]
    prediction = predictor.predict(rows)
    assert prediction.scores.shape == (3, 2)
    np.testing.assert_allclose(prediction.scores, model.predict_proba(np.array(rows, np.float32)), atol=1e-5)
    assert [predictor.label_of(c) for c in prediction.classes] == ["positive", "negative", "positive"]


def test_input_is_checked_against_the_models_own_metadata(classifier):
    predictor, _ = classifier
    assert predictor.feature_shape == [3]
    with pytest.raises(InvalidInput, match="each row must have shape 3; got rows of shape 4"):
        predictor.check([[1, 2, 3, 4]])
    with pytest.raises(InvalidInput, match="equal length"):
        predictor.check([[1, 2, 3], [1, 2]])
    with pytest.raises(InvalidInput, match="at least one row"):
        predictor.check([])
    with pytest.raises(InvalidInput, match="finite numbers within the range of float32"):
        predictor.check([[1e39, 0, 0]])
    assert predictor.check([[1, 2, 3]]).dtype == np.float32


def test_a_model_without_a_class_output_predicts_the_argmax(tmp_path):
    weights = helper.make_tensor("W", TensorProto.FLOAT, [2, 3], [1, 0, -1, 0, 1, 2])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["logits"])],
        "logits_only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=[weights],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    predictor = OnnxPredictor(tmp_path / "m.onnx").load()
    prediction = predictor.predict([[1.0, 0.0], [0.0, 1.0]])
    assert prediction.classes.tolist() == [0, 2]
    assert predictor.label_of(2) == "2"  # no label file: the index itself


def test_the_one_class_model_gives_scores_and_outlier_flags():
    predictor = OnnxPredictor("models/iris_ocs/model.onnx", "models/iris_ocs/labels.json").load()
    prediction = predictor.predict([[5.1, 3.5, 1.4, 0.2], [1.0, 2.0, 3.0, 4.0]])
    assert prediction.scores.shape == (2, 1)
    assert [predictor.label_of(c) for c in prediction.classes] == ["inlier", "outlier"]
    # The same figures as the original sample's model: the one-class SVM is deterministic.
    np.testing.assert_allclose(prediction.scores[:, 0], [0.19159, -2.94102], atol=1e-4)


def test_items_of_a_free_axis_are_checked_empty_ones_too(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["x"], ["score"], axes=[1], keepdims=1)],
        "free_axis",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "values"])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    predictor = OnnxPredictor(tmp_path / "m.onnx").load()
    assert predictor.feature_shape == [-1]
    assert predictor.check([[1, 2, 3, 4, 5]]).shape == (1, 5)
    assert predictor.check([[]]).shape == (1, 0)  # no value to refuse: no error of the check's own
    for bad in ([[1.0, float("nan")]], [[float("-inf")]], [[0.0, -1e39]]):
        with pytest.raises(InvalidInput, match="finite numbers within the range of float32"):
            predictor.check(bad)
