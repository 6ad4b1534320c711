"""ItemStore: the shipped items are the generated ones, each read right by the digits CNN; unknown ids are 404s."""

from pathlib import Path

import numpy as np
import pytest

from mlpatterns.errors import NotFound
from mlpatterns.images import ImagePreprocessor
from mlpatterns.items import ITEM_IDS, ITEMS, ItemStore, write_items
from mlpatterns.predictor import OnnxPredictor


def test_the_shipped_items_are_the_generated_ones_and_the_digits_model_reads_each_right(tmp_path):
    store = ItemStore()
    assert store.ids() == list(ITEM_IDS) == [f"000{digit}" for digit in range(8)]
    for path in write_items(tmp_path):
        assert path.read_bytes() == (ITEMS / path.name).read_bytes(), f"{path.name} differs: python -m mlpatterns.items"
    preprocess = ImagePreprocessor()  # items are file bytes, not base64: pixels() decodes each
    pixels = [preprocess.pixels(store.read(item_id), index) for index, item_id in enumerate(ITEM_IDS)]
    predicted = OnnxPredictor(Path("models/cifar10/model.onnx")).load().predict(np.stack(pixels))
    assert predicted.classes.tolist() == list(range(8))  # item "0003" is a 3


@pytest.mark.parametrize("item_id", ["0008", "9999", "../../etc/passwd", "00/0", "٠٠٠١", ""])
def test_an_id_that_names_no_item_is_not_found_and_builds_no_path_outside_the_store(item_id):
    with pytest.raises(NotFound, match="no item"):
        ItemStore().read(item_id)
