"""ONNX predictor: one small class that every serving pattern uses.

It loads the model once, checks each batch against the model's own input metadata (item shape, dtype),
predicts every item of the batch (a row of features, an image) and maps class indices to labels.
"""

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mlpatterns.errors import InvalidInput

logger = logging.getLogger(__name__)

# onnxruntime reports element types as strings; these are the ones our models take.
_ONNX_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def value_limit(input_dtype) -> float | None:
    """The magnitude from which a number becomes infinite in a model's (float32) input, and is refused: its
    largest value plus half a step, as numbers round to the nearest. float64 inputs take every finite number."""
    dtype = np.dtype(input_dtype)
    if dtype.kind != "f" or dtype.itemsize >= 8:
        return None
    largest = np.finfo(dtype).max
    return float(largest) + float(largest - np.nextafter(largest, 0, dtype=dtype)) / 2


def load_labels(path: Path) -> dict[int, str]:
    """Read a label file: a JSON object from class index (as a string, JSON's only key type) to name."""
    raw = json.loads(path.read_text())
    return {int(index): name for index, name in raw.items()}


@dataclass(frozen=True)
class Prediction:
    """What the model says about a batch: one row of scores and one class index per input item."""

    scores: np.ndarray  # (N, C) float32: class probabilities, or (N, 1) decision scores for a one-class model
    classes: np.ndarray  # (N,) int64


class OnnxPredictor:
    """Serves one ONNX model through onnxruntime. Thread-safe: onnxruntime sessions may be shared."""

    def __init__(self, model_path: Path, label_path: Path | None = None, intra_op_threads: int = 1):
        self.model_path = Path(model_path)
        self.label_path = Path(label_path) if label_path else None
        self.intra_op_threads = intra_op_threads
        self.session: ort.InferenceSession | None = None
        self.labels: dict[int, str] = {}

    @property
    def ready(self) -> bool:
        return self.session is not None

    def load(self) -> "OnnxPredictor":
        if not self.model_path.is_file():
            raise FileNotFoundError(f"no model at {self.model_path}")
        options = ort.SessionOptions()
        # One thread per call: a web server runs one worker per core, so more threads only contend.
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        if model_input.type not in _ONNX_TO_NUMPY:
            raise ValueError(f"{self.model_path}: unsupported input type {model_input.type}")
        self.input_name = model_input.name
        self.input_dtype = _ONNX_TO_NUMPY[model_input.type]
        self.input_shape = list(model_input.shape)  # e.g. [None, 4]; None or a name marks the batch axis
        # The shape of one input item (a row of features, an image), without the batch axis; -1: any size.
        self.feature_shape = [int(d) if isinstance(d, int) else -1 for d in self.input_shape[1:]]
        # What messages call one input item: a "row" of features, as the tabular API always said, else "item".
        self.item_name = "row" if len(self.feature_shape) == 1 else "item"
        # What `check` compares each batch with: the item shape when no axis is free, and for a float input the
        # magnitude every number must stay below (float64: any finite number).
        self._fixed_item_shape = None if -1 in self.feature_shape else tuple(self.feature_shape)
        self._below = (value_limit(self.input_dtype) or math.inf) if np.dtype(self.input_dtype).kind == "f" else None
        self._pick_outputs()
        self._output_names = [self.score_output] + ([self.class_output] if self.class_output else [])
        # InferenceSession.run checks its feed in Python on every call (missing inputs, OrtValue ownership, WebGPU
        # graph capture: 8k instructions, 3% of a one-row request) before it calls the compiled session it wraps.
        # Our feed is always the model's one input, an array checked by `check`, and the CPU provider has no
        # fallback to retry on: the compiled session is called straight, with no run options.
        self._run = self.session._sess.run
        if self.label_path is not None:
            self.labels = load_labels(self.label_path)
        logger.info("loaded %s: input %s %s", self.model_path, self.input_name, self.input_shape)
        return self

    def _pick_outputs(self) -> None:
        """Find the class-index output and the score output among the model's outputs.

        skl2onnx classifiers (zipmap off) give `label` (N,) int64 and `probabilities` (N, C) float;
        a one-class SVM gives `label` (N, 1) int64 (+1 inlier, -1 outlier) and `scores` (N, 1) float;
        a torch export gives one float output of logits.
        """
        outputs = self.session.get_outputs()
        floats = [o.name for o in outputs if o.type == "tensor(float)"]
        ints = [o.name for o in outputs if o.type == "tensor(int64)"]
        if not floats:
            raise ValueError(f"{self.model_path}: no float output to serve")
        self.score_output = floats[0]
        self.class_output = ints[0] if ints else None

    def check(self, items: list | np.ndarray) -> np.ndarray:
        """Turn a batch of items into the model's input array, or say exactly what is wrong with it."""
        # The usual batch passes three cheap tests; the messages are built only for one that fails.
        if len(items) == 0:
            raise InvalidInput(f"data must hold at least one {self.item_name}")
        below = self._below
        # Numbers for a float input are read as float64 first, where no number a caller can send overflows: the
        # one range test below then needs no np.errstate around a narrowing cast (which cost more than the test).
        # An array that cannot overflow the input's dtype (integers, float32 itself) is cast straight.
        wide = below is not None and not (
            isinstance(items, np.ndarray) and (items.dtype.kind in "iub" or np.can_cast(items.dtype, self.input_dtype))
        )
        try:
            batch = np.asarray(items, dtype=np.float64 if wide else self.input_dtype)
        except (ValueError, TypeError):
            raise InvalidInput(self._not_a_batch()) from None
        fixed = self._fixed_item_shape
        if batch.shape[1:] != fixed if fixed is not None else self._wrong_shape(batch.shape):
            noun = self.item_name
            got = "x".join(map(str, batch.shape[1:])) or "scalar"
            raise InvalidInput(f"each {noun} must have shape {self._shape_text()}; got {noun}s of shape {got}")
        # One reduction refuses NaN (which fails `<`), infinities and what the input's dtype would make infinite;
        # compared as a Python float, which a float32 batch's maximum would overflow into (with a warning). An
        # empty batch (items of a free axis, all empty) has no maximum and no value to refuse.
        if below is not None and batch.size and not float(np.maximum.reduce(np.abs(batch), axis=None)) < below:
            raise InvalidInput(f"values must be finite numbers within the range of {np.dtype(self.input_dtype).name}")
        return batch.astype(self.input_dtype, copy=False)

    def _wrong_shape(self, shape: tuple[int, ...]) -> bool:
        expected = self.feature_shape
        return len(shape) != len(expected) + 1 or any(
            e != -1 and e != got for e, got in zip(expected, shape[1:], strict=True)
        )

    def _shape_text(self) -> str:
        return "x".join(str(d) if d != -1 else "any" for d in self.feature_shape)

    def _not_a_batch(self) -> str:
        if self.item_name == "row":
            return "data must be a list of rows of equal length, each a list of numbers"
        return f"data must be a list of items of equal shape ({self._shape_text()}), each nested lists of numbers"

    def predict(self, items: list | np.ndarray) -> Prediction:
        batch = items if isinstance(items, np.ndarray) else self.check(items)
        results = self._run(self._output_names, {self.input_name: batch}, None)
        scores = results[0]
        classes = results[1].reshape(-1) if self.class_output else scores.argmax(axis=1)
        return Prediction(scores, classes)

    def label_of(self, index: int) -> str:
        return self.labels.get(int(index), str(int(index)))
