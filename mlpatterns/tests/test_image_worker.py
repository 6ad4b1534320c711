"""The image-job worker's handlers on the digits CNN, without a queue: jobs taken together get the answers they
get alone, and a job the model cannot take fails alone with the reason it fails with alone."""

import numpy as np
import pytest

from mlpatterns.image_jobs import IMAGE_SHAPE, to_payload
from mlpatterns.image_worker import ImageWorkerSettings, make_handlers
from mlpatterns.images import ImagePreprocessor, sample_digits
from mlpatterns.jobs import Job
from mlpatterns.runner.run import REPO_ROOT


@pytest.fixture(scope="module")
def handlers():
    return make_handlers(ImageWorkerSettings(model_path=REPO_ROOT / "models" / "cifar10" / "model.onnx"))


def jobs_of(payloads: list) -> list[Job]:
    return [Job(id=str(index), state="running", payload=payload) for index, payload in enumerate(payloads)]


def test_jobs_taken_together_are_answered_as_alone_and_a_bad_one_fails_alone(handlers):
    predict, predict_together = handlers
    preprocess = ImagePreprocessor(shape=IMAGE_SHAPE)
    digits = [to_payload(preprocess([image])[0]) for image in sample_digits().values()]
    bad = [to_payload(np.zeros((3, 8, 8), np.float32)), {"image": "json, not .npy"}]
    jobs = jobs_of(digits[:4] + bad[:1] + digits[4:] + bad[1:])

    together = predict_together(jobs)
    for job, outcome in zip(jobs, together, strict=True):
        try:
            alone = predict(job)
        except Exception as error:
            assert type(outcome) is type(error) and str(outcome) == str(error)
        else:
            assert outcome["prediction"] == alone["prediction"] and outcome["model"] == alone["model"]
            np.testing.assert_allclose(outcome["scores"], alone["scores"], rtol=1e-5, atol=1e-6)
    labels = [outcome["prediction"] for outcome in together if isinstance(outcome, dict)]
    assert labels == [str(digit) for digit in range(10)]  # the shipped digits, each its own label
    assert "shape" in str(together[4]) and isinstance(together[-1], TypeError)


def test_a_batch_of_bad_jobs_only_fails_each(handlers):
    _, predict_together = handlers
    outcomes = predict_together(jobs_of([b"not npy", {"n": 1}]))
    assert [type(outcome).__name__ for outcome in outcomes] == ["ValueError", "TypeError"]
