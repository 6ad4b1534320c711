"""Adaptive micro-batching: requests that arrive together are predicted in one model call.

    batcher = MicroBatcher(plane, max_wait_ms=2, max_items=64)   # or enable_batching(plane, settings)
    answer = await batcher.predict(items)                          # from an event loop, as plane.predict_async

Each request's items are checked first, on their own (a bad request gets its own 422 or 413 and never joins a
group). The checked array then joins the pending group of arrays of its item shape, and the group is predicted
as one onnxruntime call:
- at once when it holds `max_items` items;
- while a call runs, requests gather: when it ends, what gathered is the next call (the model is never idle
  while work waits, and the busier the service, the larger the groups);
- when the model is idle: `adaptive` (the default) takes the group after the next turn of the event loop in
  which no request joined it (or once its oldest has waited `max_wait_ms`), so a lone request waits for nothing
  and requests still streaming in go together; otherwise the group waits until its oldest request has waited
  `max_wait_ms` (Triton's dynamic batcher's way), which gathers more at a cost of up to that wait on every
  request of a quiet service (measured by `python -m mlpatterns.bench.batching`: twice the p50 of a lone request
  at 2 ms, for no more req/s).
The call runs in a thread of the batcher's own (onnxruntime lets go of the GIL), so requests keep gathering;
a group small enough for the event loop (INLINE_MAX_VALUES) is predicted on it. Each caller gets its own rows of
scores and classes, and the plane's postprocess hook runs on each caller's own rows (its extra fields, an A/B
arm, are per request, as without batching).

A model error in a call of several requests is retried for each request alone, so only a request the model
itself fails gets the error; nobody waits for ever. A caller gone (client disconnected, task cancelled) is left
out of its call, or its rows are dropped, and the others are answered.

Metrics: `model_batch_items{model}` and `model_batch_requests{model}` per model call, and the wait in the group as
stage `batch_wait` of `model_stage_seconds`.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool

from mlpatterns import metrics
from mlpatterns.dataplane import STAGE_SECONDS, Answer, DataPlane
from mlpatterns.settings import ModelServingSettings

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BATCH_ITEMS = metrics.histogram(
    "model_batch_items", "Items predicted in one model call by the micro-batcher", ["model"], buckets=SIZE_BUCKETS
)
BATCH_REQUESTS = metrics.histogram(
    "model_batch_requests", "Requests answered by one model call of the micro-batcher", ["model"], buckets=SIZE_BUCKETS
)


@dataclass
class _Waiting:
    batch: np.ndarray  # the request's checked input
    future: asyncio.Future  # its answer
    since: float  # when it joined the group (time.perf_counter)


class MicroBatcher:
    """Gathers concurrent requests to one data plane into shared model calls. One per process and event loop."""

    def __init__(self, plane: DataPlane, *, max_wait_ms: float = 2.0, max_items: int = 64, adaptive: bool = True):
        if max_wait_ms <= 0 or max_items <= 0:
            raise ValueError("a micro-batcher needs max_wait_ms > 0 and max_items > 0")
        self.plane = plane
        self.max_wait = max_wait_ms / 1000
        self.max_items = max_items
        self.adaptive = adaptive
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"batch-{plane.name}")
        # Updated for every request: written together at the end of the loop's round (metrics.deferred).
        self._sizes = (
            metrics.deferred(BATCH_ITEMS.labels(plane.name)),
            metrics.deferred(BATCH_REQUESTS.labels(plane.name)),
        )
        self._timers = {
            stage: metrics.deferred(STAGE_SECONDS.labels(plane.name, stage)) for stage in ("batch_wait", "model")
        }
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """State of one event loop (a test may run several loops in turn; a server runs one)."""
        self._loop = loop
        self._groups: dict[tuple, list[_Waiting]] = {}  # item shape -> waiting requests, oldest first
        self._calls = 0  # model calls running: 0 or 1
        self._timer: asyncio.TimerHandle | None = None
        self._turn: asyncio.Handle | None = None
        self._joined = 0  # requests that joined a group so far: did any join during the last turn?

    async def predict(self, items: list | np.ndarray) -> Answer:
        """The answer to this request's items alone, predicted together with whatever arrives with it."""
        plane = self.plane
        inline = isinstance(items, np.ndarray) or plane.fits_inline(len(items))
        if plane.preprocess is None and inline:
            batch = plane.to_input(items)  # an array is checked in microseconds, a short list too
        else:
            plane.check_size(items)
            batch = await run_in_threadpool(plane.to_input, items)  # decoding images, parsing a long list
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        future = loop.create_future()
        self._groups.setdefault(batch.shape[1:], []).append(_Waiting(batch, future, time.perf_counter()))
        self._joined += 1
        self._schedule()
        return await future

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- when a group goes ------------------------------------------------------------------------------------

    def _schedule(self) -> None:
        """After a request joins and after a call ends: start the next call if it is due, else be woken when it is."""
        if self._calls or not self._groups:
            return  # the running call's end calls this again
        shape, group = next(iter(self._groups.items()))  # the group whose oldest request came first
        waited = time.perf_counter() - group[0].since  # perf_counter: uvloop's loop.time() counts whole ms
        if waited >= self.max_wait or sum(len(waiting.batch) for waiting in group) >= self.max_items:
            self._start(shape)
        elif self.adaptive:
            if self._turn is None:
                self._turn = self._loop.call_soon(self._next_turn, self._joined)
        elif self._timer is None:
            self._timer = self._loop.call_later(self.max_wait - waited, self._on_timer)

    def _next_turn(self, joined_before: int) -> None:
        """Adaptive: the loop has done a turn since the model fell idle. Requests still arriving (some joined during
        that turn): wait another turn, up to max_wait; none: go now."""
        self._turn = None
        if self._joined != joined_before:
            self._schedule()
        elif not self._calls and self._groups:
            self._start(next(iter(self._groups)))

    def _on_timer(self) -> None:
        self._timer = None
        self._schedule()

    def _start(self, shape: tuple) -> None:
        group = self._groups.pop(shape)
        taken, items = [], 0
        while group and (not taken or items + len(group[0].batch) <= self.max_items):
            waiting = group.pop(0)
            items += len(waiting.batch)
            taken.append(waiting)
        if group:
            self._groups[shape] = group  # the rest goes next (it keeps its place: oldest request first)
        taken = [waiting for waiting in taken if not waiting.future.done()]  # callers gone
        if not taken:
            self._schedule()
            return
        now = time.perf_counter()
        for waiting in taken:
            self._timers["batch_wait"].observe(now - waiting.since)
        batches = [waiting.batch for waiting in taken]
        self._calls += 1
        if self.plane.fits_inline(sum(map(len, batches))):
            self._deliver(taken, self._predict(batches))  # _predict answers every request, raising nothing
            return
        try:
            call = self._loop.run_in_executor(self._executor, self._predict, batches)
        except RuntimeError as error:  # the batcher was closed: these requests fail, none waits for ever
            self._deliver(taken, [error] * len(taken))
            return
        call.add_done_callback(lambda done: self._deliver(taken, done))

    def _deliver(self, taken: list[_Waiting], outcomes: list | asyncio.Future) -> None:
        self._calls -= 1
        if isinstance(outcomes, asyncio.Future):  # the thread's call: its answers, unless the batcher was closed
            failed = RuntimeError("the batcher was closed") if outcomes.cancelled() else outcomes.exception()
            outcomes = [failed] * len(taken) if failed else outcomes.result()
        for waiting, outcome in zip(taken, outcomes, strict=True):
            if waiting.future.done():
                continue  # its caller is gone
            if isinstance(outcome, BaseException):
                waiting.future.set_exception(outcome)
            else:
                waiting.future.set_result(outcome)
        self._schedule()

    # -- the call (in the batcher's thread, or inline for a small group) ---------------------------------------

    def _predict(self, batches: list[np.ndarray]) -> list[Answer | Exception]:
        """One model call for every request of the group; each request's answer or its error, in order."""
        items, requests = self._sizes
        try:
            scores, classes = self._model(np.concatenate(batches) if len(batches) > 1 else batches[0])
        except Exception as error:
            if len(batches) == 1:
                return [error]
            return [outcome for batch in batches for outcome in self._predict([batch])]  # each alone
        items.observe(len(scores))
        requests.observe(len(batches))
        outcomes: list[Answer | Exception] = []
        start = 0
        for batch in batches:
            end = start + len(batch)
            outcomes.append(self._answer(scores[start:end], classes[start:end], batch))
            start = end
        return outcomes

    def _model(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        prediction = self.plane.predictor.predict(batch)
        self._timers["model"].observe(time.perf_counter() - start)
        return prediction.scores, prediction.classes

    def _answer(self, scores: np.ndarray, classes: np.ndarray, batch: np.ndarray) -> Answer | Exception:
        plane = self.plane
        answer = Answer(scores, classes, plane.name, plane.predictor.labels)
        if plane.postprocess is None:
            return answer
        try:
            return plane.postprocess(answer, batch)
        except Exception as error:  # this request's hook failed: its error alone
            return error


def enable_batching(plane: DataPlane, settings: ModelServingSettings) -> None:
    """Make the plane's `predict_async` go through a micro-batcher when the settings say so (BATCH_MAX_WAIT_MS > 0)."""
    if settings.batch_max_wait_ms > 0:
        plane.batcher = MicroBatcher(
            plane,
            max_wait_ms=settings.batch_max_wait_ms,
            max_items=settings.batch_max_items,
            adaptive=settings.batch_adaptive,
        )
