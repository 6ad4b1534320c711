"""The data plane on small models built in tmp_path: hooks, extra answer fields, the batch limit, stage timing,
and where a batch is predicted (event loop or thread pool); then the same through the serving app's routes."""

import asyncio
import json

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from mlpatterns import dataplane
from mlpatterns.dataplane import DataPlane
from mlpatterns.errors import InvalidInput, PayloadTooLarge
from mlpatterns.images import ImagePreprocessor, encode_png
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.serving.app import create_serving_app
from mlpatterns.settings import ModelServingSettings

IMAGE_SHAPE = (3, 4, 4)
COLOURS = ["red", "green", "blue"]


def channel_model(path) -> None:
    """Class k's score is the mean of channel k: a red image is "red"."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["scores"], keepdims=0)],
        "channel_means",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *IMAGE_SHAPE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


@pytest.fixture
def predictor(tmp_path):
    channel_model(tmp_path / "model.onnx")
    (tmp_path / "labels.json").write_text(json.dumps(dict(enumerate(COLOURS))))
    return OnnxPredictor(tmp_path / "model.onnx", tmp_path / "labels.json").load()


def image(red: float, green: float, blue: float) -> np.ndarray:
    return np.stack([np.full(IMAGE_SHAPE[1:], v, np.float32) for v in (red, green, blue)])


def _count(model: str, stage: str) -> float:
    for family in dataplane.STAGE_SECONDS.collect():
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels == {"model": model, "stage": stage}:
                return sample.value
    return 0.0


def test_every_item_is_answered_with_scores_labels_and_the_models_name(predictor):
    plane = DataPlane(predictor, name="colours")
    answer = plane.predict([image(9, 1, 1), image(0, 0, 5), image(1, 7, 2)])
    assert answer.labels == ["red", "blue", "green"]
    np.testing.assert_allclose(answer.scores[0], [9, 1, 1])
    assert answer.model == "colours" and answer.extra == {}


def test_the_name_defaults_to_the_model_directory(predictor, tmp_path):
    assert DataPlane(predictor).name == tmp_path.name


def test_a_batch_over_the_limit_is_refused_before_any_work(predictor):
    plane = DataPlane(predictor, name="limited", max_items=2)
    with pytest.raises(PayloadTooLarge, match="data has 3 items; at most 2 are accepted"):
        plane.predict([image(1, 0, 0)] * 3)
    assert _count("limited", "check") == 0


def test_each_stage_is_timed_per_model(predictor):
    plane = DataPlane(predictor, name="timed", preprocess=ImagePreprocessor(IMAGE_SHAPE))
    plane.predict([encode_png(image(200, 0, 0))] * 2)
    plane.predict([encode_png(image(0, 200, 0))])
    assert [_count("timed", stage) for stage in ("preprocess", "check", "model", "postprocess")] == [2, 2, 2, 0]


def test_hooks_change_what_goes_in_and_what_comes_out(predictor):
    def with_brightness(answer, batch):
        return answer.with_extra(brightness=batch.mean(axis=(1, 2, 3)).round(1).tolist())

    plane = DataPlane(predictor, preprocess=ImagePreprocessor(IMAGE_SHAPE), postprocess=with_brightness)
    answer = plane.predict([encode_png(image(255, 0, 0)), encode_png(image(0, 0, 30))])
    assert answer.labels == ["red", "blue"]
    assert answer.extra == {"brightness": [85.0, 10.0]}


def test_a_bad_item_is_invalid_input_naming_it(predictor):
    plane = DataPlane(predictor, preprocess=ImagePreprocessor(IMAGE_SHAPE))
    with pytest.raises(InvalidInput, match="item 1 is not base64"):
        plane.predict([encode_png(image(1, 0, 0)), "not base64!"])


def test_large_batches_are_predicted_in_the_thread_pool(predictor, monkeypatch):
    hops = []

    async def counting_hop(function, items):
        hops.append(len(items))
        return function(items)

    monkeypatch.setattr(dataplane, "run_in_threadpool", counting_hop)
    plane = DataPlane(predictor)
    inline = dataplane.INLINE_MAX_VALUES // 48  # 48 values an image
    client = TestClient(create_serving_app(ModelServingSettings(sample_input=[image(1, 0, 0).tolist()]), predictor))
    for count in (inline, inline + 1):
        body = {"data": [image(0, 1, 0).tolist()] * count}
        assert client.post("/predict/label", json=body).json() == {"prediction": ["green"] * count}
    assert hops == [inline + 1]
    # A preprocess hook decodes images, which takes milliseconds: even one goes to the pool.
    hooked = DataPlane(predictor, preprocess=ImagePreprocessor(IMAGE_SHAPE))
    asyncio.run(hooked.predict_async([encode_png(image(0, 0, 9))]))
    asyncio.run(plane.predict_async([image(0, 0, 9)]))
    assert hops == [inline + 1, 1]


def test_the_routes_take_encoded_images_and_carry_extra_fields(predictor):
    settings = ModelServingSettings(model_name="colours", sample_input=[encode_png(image(0, 0, 99))])
    app = create_serving_app(
        settings,
        predictor,
        preprocess=ImagePreprocessor(IMAGE_SHAPE),
        postprocess=lambda answer, batch: answer.with_extra(model=answer.model),
    )
    with TestClient(app) as client:
        red, green = encode_png(image(255, 0, 0)), encode_png(image(0, 255, 0))
        assert client.post("/predict/label", json={"data": [red, green]}).json() == {
            "prediction": ["red", "green"],
            "model": "colours",
        }
        assert client.post("/predict", json={"data": [green]}).json() == {
            "prediction": [[0.0, 255.0, 0.0]],
            "model": "colours",
        }
        assert client.get("/predict/test/label").json() == {"prediction": ["blue"], "model": "colours"}
        assert client.get("/metadata").json()["data_structure"] == "(1, 3, 4, 4)"
        refused = client.post("/predict", json={"data": [red, "aGVsbG8="]})
        assert refused.status_code == 422
        assert refused.json()["detail"].startswith("item 1 is not an image Pillow can read")
        schema = client.get("/openapi.json").json()["components"]["schemas"]["PredictEncodedRequest"]
        assert schema["properties"]["data"]["items"]["type"] == "string"
        assert schema["properties"]["data"]["items"]["contentEncoding"] == "base64"
