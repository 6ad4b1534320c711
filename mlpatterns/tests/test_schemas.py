"""The array parser of the request body (`array_parser`): the same numbers as validation, or no answer at all."""

import numpy as np
import orjson
import pytest

from mlpatterns.serving.schemas import array_parser, predict_request

ROWS = predict_request((4,), max_items=100, value_limit=3.5e38, arrays=True)
IMAGES = predict_request((1, 2, 2), max_items=100, arrays=True)

ACCEPTED = [
    (ROWS, {"data": [[5.1, 3.5, 1.4, 0.2]]}),
    (ROWS, {"data": [[5, 3, 1, 0], [6.2, 2.9, 4.3, 1.3]]}),  # integers are numbers too
    (ROWS, {"data": [[1e30, -0.0, 1e-300, 3]]}),
    (ROWS, {"data": [[1, 2, 3]]}),  # the wrong width: validation takes it too, the data plane refuses it
    (IMAGES, {"data": [[[[0.1, 0.2], [0.3, 0.4]]]]}),
]


@pytest.mark.parametrize(("model", "content"), ACCEPTED, ids=[orjson.dumps(c).decode()[:60] for _, c in ACCEPTED])
def test_parses_what_validation_accepts_into_the_same_numbers(model, content):
    body = orjson.dumps(content)
    parsed = array_parser(model)(body)
    validated = model.model_validate_json(body)
    assert isinstance(parsed.data, np.ndarray)
    np.testing.assert_array_equal(parsed.data.astype(np.float32), np.asarray(validated.data, dtype=np.float32))


LEFT_TO_VALIDATION = [
    b'{"data": [[5.1, 3.5, true, 0.2]]}',  # numpy would take true as 1.0
    b'{"data": [[5.1, 3.5, null, 0.2]]}',
    b'{"data": [[5.1, 3.5, "1.4", 0.2]]}',
    b'{"data": [[5.1, 3.5, 1.4], [1, 2, 3, 4]]}',  # ragged
    b'{"data": [5.1, 3.5, 1.4, 0.2]}',  # not deep enough
    b'{"data": [[[5.1, 3.5, 1.4, 0.2]]]}',  # too deep
    b'{"data": []}',
    b'{"data": [[5.1, 3.5, 1.4, 0.2]], "extra": 1}',
    b'{"rows": [[5.1, 3.5, 1.4, 0.2]]}',
    b"[[5.1, 3.5, 1.4, 0.2]]",
    b'{"data": [[1e999, 3.5, 1.4, 0.2]]}',  # infinite
    b'{"data": [[NaN, 3.5, 1.4, 0.2]]}',
    b'{"data": [[{"a": 1}, 3.5, 1.4, 0.2]]}',
    b'{"data": [[5.1, 3.5, 1.4, 0.2]',  # not JSON
]


@pytest.mark.parametrize("body", LEFT_TO_VALIDATION, ids=lambda b: b.decode()[:60])
def test_leaves_every_other_body_to_validation(body):
    assert array_parser(ROWS)(body) is None


def test_only_models_made_with_arrays_get_a_parser():
    assert array_parser(predict_request((4,), max_items=100, value_limit=3.5e38)) is None
    assert array_parser(predict_request((4,), str, max_items=100, arrays=True)) is None  # items that are not numbers
