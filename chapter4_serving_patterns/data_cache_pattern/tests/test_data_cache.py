"""End to end: proxy, pred and a real Redis started by the local runner, as `make up` starts them.

What the pattern promises, each proved by what the running processes count and store, not by timing:
- every item comes back right, and an answer from a cached tensor equals the answer from a fresh one;
- the second request for an item skips loading and preprocessing (the proxy's item_preprocess_total stays put)
  but still reaches the model (pred's request counter and tensor bytes rise): the cache saves the input's
  preparation, the model answers every time;
- the tensor is stored compact: the raw Redis value is numpy's .npy of 12,288 float32 bytes and a short header,
  bit for bit the preprocessed item, under a namespaced key, with a TTL; a posted image's under its digest;
- entries expire after CACHE_TTL_SECONDS; with Redis killed the proxy still answers, preprocessing every time;
- an unknown item is a 404 naming the items, a malformed id a 422, and neither loads, stores or predicts.
"""

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from mlpatterns.cache import digest
from mlpatterns.images import ImagePreprocessor
from mlpatterns.items import ITEM_IDS, ItemStore
from mlpatterns.testing import assert_healthy, assert_refused, read_metrics, start_pattern

PATTERN = Path(__file__).parents[1]
TENSOR_BYTES = 3 * 32 * 32 * 4  # one item's tensor, as pred receives it and as Redis holds it


@pytest.fixture(scope="module")
def proxy(pattern):
    return pattern.client("proxy")


@pytest.fixture
def cold(pattern):
    """The pattern's Redis with no entry in it, for a test that starts from a cold cache."""
    with redis.Redis(port=pattern.port("redis")) as client:
        client.flushdb()
        yield client


# What the proxy looked up and preprocessed, and what pred was sent.
SEEN = {
    "hits": ("proxy", 'cache_lookups_total{cache="data",result="hit"}'),
    "misses": ("proxy", 'cache_lookups_total{cache="data",result="miss"}'),
    "preprocessed": ("proxy", "item_preprocess_total"),
    "predicted": ("pred", 'prediction_requests_total{content_type="application/octet-stream"}'),
    "tensor bytes": ("pred", "tensor_bytes_total"),
}


def seen(run) -> dict[str, float]:
    return read_metrics(run, SEEN)


def since(before: dict[str, float], run) -> dict[str, float]:
    now = seen(run)
    return {name: now[name] - count for name, count in before.items()}


def test_every_item_is_right_from_a_fresh_tensor_and_from_a_cached_one(proxy, cold):
    fresh = {item_id: proxy.post("/predict", json={"data": item_id}) for item_id in ITEM_IDS}
    cached = {item_id: proxy.post("/predict", json={"data": item_id}) for item_id in ITEM_IDS}
    for item_id in ITEM_IDS:  # item "0003" is a 3
        assert (fresh[item_id].headers["X-Cache"], cached[item_id].headers["X-Cache"]) == ("miss", "hit")
        scores = np.array(cached[item_id].json()["prediction"])
        assert scores.shape == (1, 10) and scores.argmax() == int(item_id)
        assert cached[item_id].content == fresh[item_id].content  # the same tensor, the same answer
    assert proxy.post("/predict/label", json={"data": "0007"}).json() == {"prediction": "7"}


def test_a_hit_skips_loading_and_preprocessing_but_still_asks_the_model(pattern, proxy, cold):
    before = seen(pattern)
    miss = proxy.post("/predict/label", json={"data": "0002"})
    after_miss = seen(pattern)
    hit = proxy.post("/predict/label", json={"data": "0002"})  # at once: the tensor was stored before the answer

    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("miss", "hit")
    assert miss.json() == hit.json() == {"prediction": "2"}
    assert since(before, pattern) == {  # both requests together
        "hits": 1,
        "misses": 1,
        "preprocessed": 1,  # the miss only
        "predicted": 2,  # both
        "tensor bytes": 2 * TENSOR_BYTES,
    }
    assert since(after_miss, pattern)["preprocessed"] == 0


def test_the_tensor_is_stored_as_compact_npy_bit_for_bit_the_preprocessed_item(proxy, cold):
    proxy.post("/predict/label", json={"data": "0003"})
    assert cold.keys("*") == [b"data:0003"]
    raw = cold.get("data:0003")
    assert raw[:1] == b"n"  # the core cache's tag for an array, then numpy's .npy
    assert TENSOR_BYTES < len(raw) <= TENSOR_BYTES + 200  # raw float32 and a header; JSON floats would be ~15 kB
    tensor = np.load(io.BytesIO(raw[1:]), allow_pickle=False)
    assert tensor.dtype == np.float32 and tensor.shape == (3, 32, 32)
    expected = ImagePreprocessor().pixels(ItemStore().read("0003"))
    assert tensor.tobytes() == expected.tobytes()
    assert 3_590_000 < cold.pttl("data:0003") <= 3_600_000  # CACHE_TTL_SECONDS of docker-compose.yml


def test_a_posted_image_s_tensor_is_cached_under_the_digest_of_its_bytes(pattern, proxy, cold):
    jpeg = ItemStore().read("0001")
    before = seen(pattern)
    answers = [proxy.post("/predict/label", json={"image_data": base64.b64encode(jpeg).decode()}) for _ in "ab"]
    assert [(a.headers["X-Cache"], a.json()["prediction"]) for a in answers] == [("miss", "1"), ("hit", "1")]
    assert since(before, pattern)["preprocessed"] == 1
    assert cold.keys("*") == [f"data:{digest(jpeg)}".encode()]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"data": "0010"}, 404, "no item '0010'; the items are 0000, 0001, 0002, 0003, 0004, 0005, 0006, 0007"),
        ({"data": "003"}, 422, "String should match pattern '^[0-9]{4}$'"),
        ({"data": "0003 "}, 422, "String should match pattern"),
        ({"data": None}, 422, "Input should be a valid string"),
        ({"image_data": ""}, 422, "at least 1 character"),
    ],
    ids=["unknown id", "three digits", "trailing space", "null", "empty image"],
)
def test_bad_ids_load_store_and_predict_nothing(pattern, proxy, cold, body, status, message):
    before = seen(pattern)
    assert_refused(proxy.post("/predict/label", json=body), status, message)
    assert since(before, pattern) == dict.fromkeys(before, 0)
    assert cold.dbsize() == 0
    assert_healthy(proxy)


def test_tensors_expire_and_with_redis_killed_every_request_is_preprocessed():
    with start_pattern(PATTERN, overrides={"proxy": {"CACHE_TTL_SECONDS": "0.5"}}) as run:
        proxy = run.client("proxy")
        ask = lambda: proxy.post("/predict/label", json={"data": "0006"})  # noqa: E731
        assert [ask().headers["X-Cache"] for _ in range(2)] == ["miss", "hit"]
        time.sleep(0.8)  # past the 0.5 s TTL (the behaviour is about time): the tensor is gone
        assert ask().headers["X-Cache"] == "miss"

        run.run.kill("redis").wait(5)  # the runner restarts no backing server: Redis stays down
        before = seen(run)
        answers = [ask() for _ in range(3)]
        assert [(a.status_code, a.headers["X-Cache"], a.json()) for a in answers] == [
            (200, "bypass", {"prediction": "6"})
        ] * 3
        assert since(before, run) == {
            "hits": 0,
            "misses": 3,  # a lookup that cannot reach Redis counts as a miss, and as an error
            "preprocessed": 3,
            "predicted": 3,
            "tensor bytes": 3 * TENSOR_BYTES,
        }
        assert_healthy(proxy)
