"""The cache patterns' shared proxy (mlpatterns/serving/item_proxy.py): what a request names, and its tensor.
The routes, the cache and the call to pred are proved end to end by the two patterns' tests."""

import asyncio
import base64

import numpy as np
import pytest
from prometheus_client import REGISTRY
from pydantic import TypeAdapter, ValidationError

from mlpatterns.cache import digest
from mlpatterns.errors import InvalidInput, NotFound
from mlpatterns.images import ImagePreprocessor
from mlpatterns.items import ITEM_IDS, ItemStore
from mlpatterns.serving.item_proxy import ImageRequest, ItemProxy, ItemProxySettings, ItemRequest, PredictBody


@pytest.fixture(scope="module")
def proxy() -> ItemProxy:
    return ItemProxy(ItemProxySettings())


def preprocessed(source: str) -> float:
    return REGISTRY.get_sample_value("item_preprocess_total", {"source": source}) or 0.0


def test_the_body_is_an_item_id_by_default_or_an_image():
    body = TypeAdapter(PredictBody)
    assert body.validate_python({}) == ItemRequest(data="0000")
    assert body.validate_python({"data": "0003"}) == ItemRequest(data="0003")
    assert body.validate_python({"image_data": "AAAA"}) == ImageRequest(image_data="AAAA")
    for bad in ({"data": "3"}, {"data": "0003", "image_data": "AAAA"}, {"image_data": ""}, [], "0003"):
        with pytest.raises(ValidationError):
            body.validate_python(bad)


def test_an_item_is_keyed_by_its_id_and_an_unknown_one_is_refused_naming_the_items(proxy):
    assert proxy.items == ITEM_IDS
    source = proxy.source(ItemRequest(data="0003"))
    assert (source.key, source.item_id, source.image) == ("0003", "0003", None)
    with pytest.raises(NotFound, match="no item '0008'; the items are 0000, 0001, .*, 0007"):
        proxy.source(ItemRequest(data="0008"))


def test_a_posted_image_is_keyed_by_the_digest_of_its_bytes(proxy):
    jpeg = ItemStore().read("0004")
    source = proxy.source(ImageRequest(image_data=base64.b64encode(jpeg).decode()))
    assert (source.key, source.item_id, source.image) == (digest(jpeg), None, jpeg)
    with pytest.raises(InvalidInput, match="^image_data is not base64"):
        proxy.source(ImageRequest(image_data="not base64!"))


def test_the_tensor_is_the_preprocessed_item_and_is_counted(proxy):
    before = preprocessed("item"), preprocessed("image")
    from_item = asyncio.run(proxy.tensor(proxy.source(ItemRequest(data="0002"))))
    jpeg = base64.b64encode(ItemStore().read("0002")).decode()
    from_image = asyncio.run(proxy.tensor(proxy.source(ImageRequest(image_data=jpeg))))
    expected = ImagePreprocessor().pixels(ItemStore().read("0002"))
    assert from_item.dtype == np.float32 and from_item.shape == (3, 32, 32)
    assert from_item.tobytes() == from_image.tobytes() == expected.tobytes()
    assert (preprocessed("item") - before[0], preprocessed("image") - before[1]) == (1, 1)


def test_bytes_that_are_no_image_are_refused_naming_the_field(proxy):
    source = proxy.source(ImageRequest(image_data=base64.b64encode(b"just text").decode()))
    with pytest.raises(InvalidInput, match="^image_data is not an image Pillow can read"):
        asyncio.run(proxy.tensor(source))
