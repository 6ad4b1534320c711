"""The data plane: prediction as a plain object, called by every transport the patterns have.

    plane = DataPlane(OnnxPredictor(model_path, label_path).load(), name="iris_svc", max_items=10_000)
    answer = plane.predict([[5.1, 3.5, 1.4, 0.2]])            # a queue worker, a batch job, a cache miss
    answer = await plane.predict_async(items)                  # an HTTP route: small batches inline, large ones
    answer.scores, answer.classes, answer.labels, answer.model  # in the thread pool

Items go in, scores and labels come out, for every item of a batch. Optional hooks change what goes in and what
comes out without touching the fast path of anyone who does not use them:

- `preprocess` turns the request's items into the model's input array (e.g. `ImagePreprocessor` in
  `mlpatterns.images`: base64 PNG/JPEG -> resized float32 pixels) and declares the request item it takes;
- `postprocess(answer, batch)` returns the answer with more in it: `answer.extra` holds fields an HTTP answer
  carries beside `prediction` (an outlier score, the arm of an A/B split), one value per item or one per batch.

Each stage is timed into one histogram, `model_stage_seconds{model, stage}` (stages `preprocess`, `check`, `model`,
`postprocess`), so a pattern's `/metrics` shows where its time goes. The HTTP routes on top are in
`mlpatterns.serving.app`; they are thin: validate the body, call the plane, write the answer.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from starlette.concurrency import run_in_threadpool

from mlpatterns import metrics
from mlpatterns.errors import PayloadTooLarge
from mlpatterns.predictor import OnnxPredictor

STAGE_SECONDS = metrics.histogram(
    "model_stage_seconds", "Time spent in each stage of a prediction, per model", ["model", "stage"]
)

# Batches of up to this many input values are predicted on the event loop, larger ones in the thread pool so that
# the loop keeps serving other requests meanwhile. A hop to the pool and back costs ~0.15 ms on a 2-core machine, and
# more under load, as the loop and the pool contend for the GIL and the cores: a 1000-row iris batch (4,000 values,
# ~0.5 ms of model) cost 1.34x the bare floor's CPU through the pool and 1.12x inline. So what takes up to a
# millisecond or two stays inline (4,096 iris rows; 5 images of 3x32x32); 256 images (60 ms) go to the pool.
INLINE_MAX_VALUES = 16384


@dataclass(frozen=True, init=False)
class Answer:
    """What the model says about a batch, one entry per item."""

    scores: np.ndarray  # (N, C) float32: class probabilities, or (N, 1) decision scores for a one-class model
    classes: np.ndarray  # (N,) int64
    model: str  # the name of the model that answered
    label_names: dict[int, str] = field(repr=False, default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # more fields of the answer, from a postprocess hook

    def __init__(
        self,
        scores: np.ndarray,
        classes: np.ndarray,
        model: str,
        label_names: dict[int, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        # Frozen all the same. The frozen dataclass's own __init__ sets each field through object.__setattr__:
        # 10k instructions an answer, where this takes 5k (a one-row request is about 520k).
        self.__dict__.update(
            scores=scores,
            classes=classes,
            model=model,
            label_names={} if label_names is None else label_names,
            extra={} if extra is None else extra,
        )

    @property
    def labels(self) -> list[str]:
        names = self.label_names
        return [names.get(index, str(index)) for index in self.classes.tolist()]

    def with_extra(self, **fields) -> "Answer":
        return replace(self, extra={**self.extra, **fields})


class Preprocess(Protocol):
    """Turns a batch of request items into the model's input array; raises InvalidInput on a bad item."""

    item_type: Any  # the type of one request item, for the request schema (e.g. `str` for a base64 image)

    def __call__(self, items: list) -> np.ndarray: ...


Postprocess = Callable[[Answer, np.ndarray], Answer]


class DataPlane:
    """One model and what surrounds it: the batch limit, the hooks, the timing. Thread-safe, as the predictor is."""

    def __init__(
        self,
        predictor: OnnxPredictor,
        *,
        name: str | None = None,
        max_items: int = 10_000,
        preprocess: Preprocess | None = None,
        postprocess: Postprocess | None = None,
    ):
        self.predictor = predictor
        self.name = name or predictor.model_path.parent.name  # models/iris_svc/model.onnx -> iris_svc
        self.max_items = max_items
        self.preprocess = preprocess
        self.postprocess = postprocess
        self.batcher = None  # a MicroBatcher (mlpatterns.batching.enable_batching) that predict_async goes through
        # Children of the stage histogram, made once: labels() costs as much as an observation.
        self._timers = {stage: metrics.deferred(STAGE_SECONDS.labels(self.name, stage)) for stage in _STAGES}
        # The values of one item: an axis of any size counts as 1 (a tabular row: 4; an image: 3,072).
        self._item_values = math.prod(max(d, 1) for d in predictor.feature_shape)

    @property
    def item_name(self) -> str:
        return self.predictor.item_name

    @property
    def item_ndim(self) -> int:
        """How deep the model's own items are: 1 for a row of features, 3 for an image (channels x rows x cols)."""
        return len(self.predictor.feature_shape)

    def fits_inline(self, count: int) -> bool:
        """Whether `count` items are few enough to predict on the event loop (INLINE_MAX_VALUES)."""
        return count * self._item_values <= INLINE_MAX_VALUES

    def check_size(self, items: list | np.ndarray) -> None:
        if len(items) > self.max_items:
            noun = self.item_name
            raise PayloadTooLarge(f"data has {len(items)} {noun}s; at most {self.max_items} are accepted")

    def to_input(self, items: list | np.ndarray) -> np.ndarray:
        """The request's items as the model's input array (preprocessed and checked), or InvalidInput."""
        self.check_size(items)
        timers = self._timers
        if self.preprocess is not None:
            start = time.perf_counter()
            items = self.preprocess(items)
            timers["preprocess"].observe(time.perf_counter() - start)
        start = time.perf_counter()
        batch = self.predictor.check(items)
        timers["check"].observe(time.perf_counter() - start)
        return batch

    def predict_input(self, batch: np.ndarray) -> Answer:
        """Predict an input array already checked by `to_input` (a cache may hold such arrays)."""
        timers = self._timers
        start = time.perf_counter()
        prediction = self.predictor.predict(batch)
        timers["model"].observe(time.perf_counter() - start)
        answer = Answer(prediction.scores, prediction.classes, self.name, self.predictor.labels)
        if self.postprocess is not None:
            start = time.perf_counter()
            answer = self.postprocess(answer, batch)
            timers["postprocess"].observe(time.perf_counter() - start)
        return answer

    def predict(self, items: list | np.ndarray) -> Answer:
        """Predict every item of a batch, on the calling thread."""
        return self.predict_input(self.to_input(items))

    async def predict_async(self, items: list | np.ndarray) -> Answer:
        """Predict from an event loop: a small batch inline, a large one in the thread pool (INLINE_MAX_VALUES).

        With a preprocess hook (decoding an image costs milliseconds) every batch goes to the pool."""
        if self.batcher is not None:
            return await self.batcher.predict(items)
        if self.preprocess is None and self.fits_inline(len(items)):
            return self.predict(items)
        self.check_size(items)  # before the hop: a refused batch costs nothing more
        return await run_in_threadpool(self.predict, items)  # the check too: np.asarray costs as much as the model


_STAGES = ("preprocess", "check", "model", "postprocess")
