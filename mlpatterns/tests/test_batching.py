"""The micro-batcher on the real models: concurrent requests answered as if each were alone, row for row, while
they share model calls; a bad request, a model error, a caller gone each touch only their own request. Then the
same through a real server (web single, started by the runner with BATCH_MAX_WAIT_MS set)."""

import asyncio

import httpx
import numpy as np
import pytest

from mlpatterns import batching
from mlpatterns.batching import MicroBatcher
from mlpatterns.dataplane import INLINE_MAX_VALUES, DataPlane
from mlpatterns.errors import InvalidInput, PayloadTooLarge
from mlpatterns.images import sample_digits
from mlpatterns.outlier import OutlierServingSettings, create_outlier_app
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.runner.run import REPO_ROOT
from mlpatterns.testing import assert_refused, metric, start_pattern

MODELS = REPO_ROOT / "models"
WEB_SINGLE = REPO_ROOT / "chapter4_serving_patterns" / "web_single_pattern"
SYNCHRONOUS = REPO_ROOT / "chapter4_serving_patterns" / "synchronous_pattern"
SECONDS = 30  # no answer within this: a hang


def calls(model: str) -> tuple[float, float, float]:
    """(model calls, requests answered by them, items predicted by them) by the batcher of `model` so far."""
    figures = {}
    for histogram in (batching.BATCH_REQUESTS, batching.BATCH_ITEMS):
        for family in histogram.collect():
            for sample in family.samples:
                if sample.labels.get("model") == model and sample.name.endswith(("_count", "_sum")):
                    figures[family.name, sample.name.rsplit("_", 1)[1]] = sample.value
    return (
        figures.get(("model_batch_requests", "count"), 0.0),
        figures.get(("model_batch_requests", "sum"), 0.0),
        figures.get(("model_batch_items", "sum"), 0.0),
    )


def plane_of(model: str, name: str, **options) -> DataPlane:
    predictor = OnnxPredictor(MODELS / model / "model.onnx", MODELS / model / "labels.json").load()
    return DataPlane(predictor, name=name, max_items=256, **options)


def requests_of_mixed_sizes(plane: DataPlane, count: int, seed: int) -> list[np.ndarray]:
    """`count` requests of 1..50 items each, values in the range the model was trained on."""
    rng = np.random.default_rng(seed)
    shape = [max(d, 1) for d in plane.predictor.feature_shape]
    high = 255.0 if len(shape) == 3 else 8.0  # raw pixels, or iris measurements in cm
    return [rng.uniform(0, high, (int(rng.integers(1, 51)), *shape)).astype(np.float32) for _ in range(count)]


async def predict_all(batcher: MicroBatcher | DataPlane, requests: list) -> list:
    """Every request at once, as concurrent callers: each one's answer or its exception."""
    predict = batcher.predict_async if isinstance(batcher, DataPlane) else batcher.predict
    calls = [predict(request) for request in requests]
    return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), SECONDS)


@pytest.mark.parametrize(("model", "adaptive"), [("iris_svc", True), ("cifar10", True), ("cifar10", False)])
def test_concurrent_requests_get_their_own_rows_as_if_alone(model, adaptive):
    name = f"batched_{model}_{adaptive}"
    plane = plane_of(model, name)
    batcher = MicroBatcher(plane, max_wait_ms=5, max_items=256, adaptive=adaptive)
    requests = [request.tolist() for request in requests_of_mixed_sizes(plane, 200, seed=1)]
    bad = [[1.0, 2.0]] if model == "iris_svc" else [[[0.0] * 32] * 3]  # an item of the wrong shape
    requests.insert(77, bad)
    before = calls(name)
    answers = asyncio.run(predict_all(batcher, requests))

    assert isinstance(answers[77], InvalidInput) and "must have shape" in str(answers[77])
    del answers[77], requests[77]
    for request, answer in zip(requests, answers, strict=True):
        alone = plane.predict(request)
        assert answer.labels == alone.labels
        np.testing.assert_allclose(answer.scores, alone.scores, rtol=1e-5, atol=1e-6)
    done_calls, done_requests, done_items = (now - then for now, then in zip(calls(name), before, strict=True))
    assert done_requests == 200 and done_items == sum(map(len, requests))
    assert done_calls < 200 / 4  # groups formed: more than four requests a call on average
    batcher.close()


def test_a_lone_request_is_a_call_of_one_in_either_mode():
    for adaptive in (True, False):
        name = f"lone_{adaptive}"
        batcher = MicroBatcher(plane_of("iris_svc", name), max_wait_ms=1, adaptive=adaptive)
        answer = asyncio.run(asyncio.wait_for(batcher.predict([[5.1, 3.5, 1.4, 0.2]]), SECONDS))
        assert answer.labels == ["setosa"]
        assert calls(name) == (1, 1, 1)
        batcher.close()


def test_a_request_over_the_limit_is_refused_before_it_joins():
    name = "limited"
    batcher = MicroBatcher(plane_of("iris_svc", name), max_wait_ms=1)
    with pytest.raises(PayloadTooLarge):
        asyncio.run(batcher.predict([[5.1, 3.5, 1.4, 0.2]] * 257))
    assert calls(name) == (0, 0, 0)
    batcher.close()


def test_a_group_never_exceeds_max_items_and_a_larger_request_goes_alone():
    plane = plane_of("iris_svc", "capped")
    batcher = MicroBatcher(plane, max_wait_ms=50, max_items=10, adaptive=False)
    called = []
    model = batcher._model
    batcher._model = lambda batch: (called.append(len(batch)), model(batch))[1]
    sizes = [3, 3, 3, 3, 25, 1]
    answers = asyncio.run(predict_all(batcher, [[[5.1, 3.5, 1.4, 0.2]] * size for size in sizes]))
    assert [len(answer.labels) for answer in answers] == sizes
    assert sorted(called) == [1, 3, 9, 25]  # (3, 3, 3) fill a group; the fourth 3 and the 25 would overfill it
    batcher.close()


class Failing:
    """A real predictor whose model call fails on any batch holding the value 666 (a model broken by one input)."""

    def __init__(self, predictor: OnnxPredictor):
        self.predictor = predictor

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def predict(self, batch):
        if (np.asarray(batch) == 666).any():
            raise RuntimeError("the model failed on this input")
        return self.predictor.predict(batch)


def test_a_model_error_fails_only_the_request_the_model_fails_on():
    name = "failing"
    predictor = OnnxPredictor(MODELS / "iris_svc" / "model.onnx", MODELS / "iris_svc" / "labels.json").load()
    plane = DataPlane(Failing(predictor), name=name)
    batcher = MicroBatcher(plane, max_wait_ms=5)
    requests = [[[5.1, 3.5, 1.4, 0.2]] * 3, [[666.0, 1.0, 1.0, 1.0]], [[6.3, 3.3, 6.0, 2.5]]]
    answers = asyncio.run(predict_all(batcher, requests))
    assert answers[0].labels == ["setosa"] * 3 and answers[2].labels == ["virginica"]
    assert isinstance(answers[1], RuntimeError) and "failed on this input" in str(answers[1])
    batcher.close()


def test_the_postprocess_hook_sees_each_requests_own_rows():
    def with_rows(answer, batch):
        return answer.with_extra(rows=len(batch), first=float(batch[0, 0]))

    plane = plane_of("iris_svc", "hooked", postprocess=with_rows)
    batcher = MicroBatcher(plane, max_wait_ms=5)
    requests = [[[float(size), 3.0, 1.0, 0.2]] * size for size in (1, 4, 2)]
    answers = asyncio.run(predict_all(batcher, requests))
    assert [answer.extra for answer in answers] == [{"rows": n, "first": float(n)} for n in (1, 4, 2)]
    batcher.close()


def test_a_caller_gone_does_not_break_the_others():
    name = "cancelled"
    plane = plane_of("cifar10", name)
    batcher = MicroBatcher(plane, max_wait_ms=50, adaptive=False)
    requests = requests_of_mixed_sizes(plane, 6, seed=2)

    async def scenario():
        tasks = [asyncio.create_task(batcher.predict(request)) for request in requests]
        await asyncio.sleep(0)  # each has joined its group
        tasks[2].cancel()
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), SECONDS)

    answers = asyncio.run(scenario())
    assert isinstance(answers[2], asyncio.CancelledError)
    for index in (0, 1, 3, 4, 5):
        assert answers[index].labels == plane.predict(requests[index]).labels
    assert calls(name)[1] == 5  # the cancelled caller's rows were left out of the call
    batcher.close()


async def post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    """Every body POSTed at once, on up to 64 connections."""
    async with httpx.AsyncClient(timeout=SECONDS, limits=httpx.Limits(max_connections=64)) as client:
        return await asyncio.gather(*(client.post(url, json=body) for body in bodies))


def unbatched_scores(requests: list[list]) -> list[np.ndarray]:
    plane = plane_of("iris_svc", "http_reference")
    return [plane.predict(request).scores for request in requests]


def test_a_served_pattern_with_batching_answers_each_request_as_alone():
    """web single under 2 gunicorn workers with BATCH_MAX_WAIT_MS: 200 concurrent requests of 1..50 rows, one bad."""
    rng = np.random.default_rng(3)
    requests = [rng.uniform(0, 8, (int(rng.integers(1, 51)), 4)).round(2).tolist() for _ in range(200)]
    expected = unbatched_scores(requests)
    # A fixed wait, long enough that requests sent together meet whatever the machine's load: groups form for sure.
    overrides = {"web": {"BATCH_MAX_WAIT_MS": "200", "BATCH_ADAPTIVE": "false", "BATCH_MAX_ITEMS": "64"}}
    with start_pattern(WEB_SINGLE, overrides=overrides) as run:
        web = run.client("web")
        url = run.url("web") + "/predict"
        bodies = [{"data": rows} for rows in requests]
        bodies.insert(50, {"data": [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]]})

        answers = asyncio.run(post_all(url, bodies))
        assert_refused(answers.pop(50), 422)
        assert len(answers) == len(expected)
        for answer, scores in zip(answers, expected, strict=True):  # row for row, as each request alone
            np.testing.assert_allclose(answer.json()["prediction"], scores, rtol=1e-5, atol=1e-6)
        model_calls = metric(web, 'model_batch_requests_count{model="iris_svc"}')
        answered = metric(web, 'model_batch_requests_sum{model="iris_svc"}')
        assert answered == 200  # the bad request never joined a group; the start's sample predictions are not batched
        assert model_calls < answered  # some calls answered more than one request


def test_the_synchronous_pattern_batches_decoded_images_and_refuses_a_bad_one_alone():
    """Images are decoded per request (in the thread pool), then their pixels predicted together."""
    digits = sample_digits()
    names = list(digits)
    requests = [[names[(start + k) % 10] for k in range(1 + start % 4)] for start in range(30)]
    bodies = [{"instances": [digits[name] for name in request]} for request in requests]
    bodies.insert(7, {"instances": [digits["1"], "aGVsbG8="]})  # "hello": base64, no image
    overrides = {"serving": {"BATCH_MAX_WAIT_MS": "200", "BATCH_ADAPTIVE": "false", "BATCH_MAX_ITEMS": "16"}}
    with start_pattern(SYNCHRONOUS, overrides=overrides) as run:
        answers = asyncio.run(post_all(run.url("serving") + "/v1/models/digits:predict", bodies))
        assert_refused(answers.pop(7), 422, "item 1 is not an image")
        assert [answer.json()["predictions"] for answer in answers] == requests  # each digit its own label
        serving = run.client("serving")
        model_calls = metric(serving, 'model_batch_requests_count{model="digits"}')
        assert metric(serving, 'model_batch_requests_sum{model="digits"}') == 30
        assert model_calls < 30


def test_a_closed_batcher_fails_a_request_instead_of_leaving_it_waiting():
    batcher = MicroBatcher(plane_of("cifar10", "closed"), max_wait_ms=1)
    batcher.close()
    images = INLINE_MAX_VALUES // (3 * 32 * 32) + 1  # too many for the event loop: a call for the batcher's thread
    with pytest.raises(RuntimeError, match="after shutdown"):
        asyncio.run(asyncio.wait_for(batcher.predict(np.zeros((images, 3, 32, 32), np.float32)), SECONDS))


def test_the_outlier_api_batched_gives_each_request_its_own_outlier_fields():
    """mlpatterns.outlier's postprocess hook scores each request's own rows, batched or not."""
    app = create_outlier_app(OutlierServingSettings(batch_max_wait_ms=5))
    plane = app.state.plane
    requests = [request.tolist() for request in requests_of_mixed_sizes(plane, 40, seed=4)]
    before = calls(plane.name)
    answers = asyncio.run(predict_all(plane, requests))
    for request, answer in zip(requests, answers, strict=True):
        alone = plane.predict(request)
        assert answer.labels == alone.labels
        np.testing.assert_array_equal(answer.extra["is_outlier"], alone.extra["is_outlier"])
        np.testing.assert_allclose(answer.extra["outlier_score"], alone.extra["outlier_score"], rtol=1e-5, atol=1e-6)
    model_calls, answered, _ = (now - then for now, then in zip(calls(plane.name), before, strict=True))
    assert answered == 40 and model_calls < 40  # shared calls
