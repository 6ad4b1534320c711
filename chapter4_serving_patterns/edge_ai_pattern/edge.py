"""The edge client: the digits CNN runs on the "device", in this process, with no server and no network.

    python -m chapter4_serving_patterns.edge_ai_pattern.edge --frames 20                # generated camera frames
    python -m chapter4_serving_patterns.edge_ai_pattern.edge --images DIR --model int8  # the PNG/JPEG files of DIR

As the book's Android app: at most one analysis per throttle interval (500 ms), and the top 3 labels with their
scores for each frame. Where the app compared TFLite with PyTorch Mobile, this client compares the float model
with the int8 one made by `quantize.py` (`--model both`, the default) and ends with a report: file sizes, load
times, latency p50/p99 per model, and how often the two agree.

Frames come from a folder (every regular file in name order; one that is no image is reported and skipped) or
are generated: the shipped sample digits, each shifted by up to 2 pixels and given sensor-like noise, from a
fixed seed, so a run is repeatable and its right answers are known.
"""

import argparse
import base64
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlpatterns.errors import InvalidInput
from mlpatterns.images import ImagePreprocessor, sample_digits
from mlpatterns.predictor import OnnxPredictor

FLOAT_MODEL = Path("models/cifar10/model.onnx")
INT8_MODEL = Path("models/edge_ai/model.int8.onnx")
SHAPE = (3, 32, 32)
MAX_SHIFT = 2  # pixels, each way: a hand-held camera's jitter
NOISE = 12.0  # standard deviation of the added noise, in 0..255 pixel units


@dataclass
class Frame:
    name: str
    pixels: np.ndarray  # (3, 32, 32) float32, 0..255: what the model takes
    digit: str | None = None  # the right answer, when it is known


@dataclass
class EdgeModel:
    """One model file on the device: loaded once, timed on every frame."""

    name: str
    path: Path
    predictor: OnnxPredictor
    load_ms: float
    latencies_ms: list[float] = field(default_factory=list)

    @classmethod
    def load(cls, name: str, path: Path) -> "EdgeModel":
        labels = path.with_name("labels.json")
        started = time.perf_counter()
        predictor = OnnxPredictor(path, labels if labels.is_file() else None).load()
        return cls(name, path, predictor, (time.perf_counter() - started) * 1000)

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        """The class probabilities of one frame."""
        started = time.perf_counter()
        scores = self.predictor.predict(pixels[None]).scores[0]
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        return scores

    def top(self, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k best (label, score), best first; ties keep class order."""
        best = np.argsort(-scores, kind="stable")[:k]
        return [(self.predictor.label_of(index), float(scores[index])) for index in best]


class Throttle:
    """At most one analysis per interval, as the app's analyzer. The app's camera dropped the frames that came
    in between; frames here wait for their turn instead, so a folder is classified file by file."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.last: float | None = None

    def wait(self) -> float:
        """Sleep until the next analysis may start; its time (time.monotonic)."""
        if self.last is not None:
            while (left := self.last + self.interval_s - time.monotonic()) > 0:
                time.sleep(left)
        self.last = time.monotonic()
        return self.last


def folder_frames(directory: Path, preprocess: ImagePreprocessor, skipped: list[str]) -> Iterator[Frame]:
    """The images of a folder, decoded by the serving path's own preprocessor; others are reported and skipped."""
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        try:
            pixels = preprocess.pixels(path.read_bytes())
        except InvalidInput as error:  # not an image, empty, or too large to decode
            reason = error.detail.removeprefix("item 0 ").split(": ")[0]
            print(f"skipped {path.name}, which {reason}", file=sys.stderr, flush=True)
            skipped.append(path.name)
            continue
        yield Frame(path.name, pixels)


def generated_frames(count: int, preprocess: ImagePreprocessor, seed: int = 0) -> Iterator[Frame]:
    """`count` camera-like frames: a random sample digit, shifted and noised (fixed seed: the same every run)."""
    digits = {label: preprocess.pixels(base64.b64decode(png)) for label, png in sample_digits().items()}
    labels = sorted(digits)
    rng = np.random.default_rng(seed)
    for _ in range(count):
        digit = labels[rng.integers(len(labels))]
        dx, dy = (int(d) for d in rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2))
        noisy = shifted(digits[digit], dx, dy) + rng.normal(0.0, NOISE, SHAPE)
        yield Frame(f"a {digit} moved {dx:+d},{dy:+d}", np.clip(noisy, 0, 255).astype(np.float32), digit)


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The (C, H, W) image moved dx pixels right and dy down; what comes in at the edge is background (0)."""
    _, rows, columns = image.shape
    padded = np.pad(image, ((0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT)))
    top, left = MAX_SHIFT - dy, MAX_SHIFT - dx
    return padded[:, top : top + rows, left : left + columns]


def run(frames: Iterator[Frame], models: list[EdgeModel], throttle: Throttle, k: int) -> dict:
    """Classify each frame with every model, one frame per throttle interval; print the top k as the app showed."""
    started = None
    agreed = known = count = 0
    right = {model.name: 0 for model in models}  # top-1 right, where the frame's digit is known
    for count, frame in enumerate(frames, 1):
        at = throttle.wait()
        started = at if started is None else started
        print(f"frame {count:>3} at {at - started:+.3f} s  {frame.name}")
        # The first run after the throttle's pause finds cold caches: the models take turns at going first.
        order = models if count % 2 else models[::-1]
        scores = {model.name: model.classify(frame.pixels) for model in order}
        tops = []
        for model in models:
            top = model.top(scores[model.name], k)
            tops.append(top[0][0])
            shown = "  ".join(f"{label}: {score:.3f}" for label, score in top)
            print(f"  {model.name:<5}  {shown}   ({model.latencies_ms[-1]:.2f} ms)", flush=True)
            right[model.name] += frame.digit is not None and top[0][0] == frame.digit
        agreed += len(set(tops)) == 1
        known += frame.digit is not None
    return {"frames": count, "agreed": agreed, "known": known, "right": right}


def report(result: dict, models: list[EdgeModel], skipped: list[str], throttle_ms: float) -> None:
    frames = result["frames"]
    print(f"\nreport: {frames} frames, {len(skipped)} skipped, throttle {throttle_ms:g} ms, all in this process")
    width = max(len(str(model.path)) for model in models)
    print(f"  {'model':<5}  {'file':<{width}}  {'bytes':>8}  {'load':>8}  {'p50':>8}  {'p99':>8}  right")
    for model in models:
        p50, p99 = np.percentile(model.latencies_ms, [50, 99]) if model.latencies_ms else (0.0, 0.0)
        right = f"{result['right'][model.name]}/{result['known']}" if result["known"] else "-"
        print(
            f"  {model.name:<5}  {str(model.path):<{width}}  {model.size:>8,}  {model.load_ms:6.1f} ms"
            f"  {p50:5.2f} ms  {p99:5.2f} ms  {right}"
        )
    if len(models) == 2:
        share = models[1].size / models[0].size
        agreement = result["agreed"] / frames if frames else 0.0
        print(
            f"  {models[1].name} is {share:.0%} of {models[0].name}'s size; "
            f"top-1 agreement {result['agreed']}/{frames} ({agreement:.1%})"
        )
    if skipped:
        print(f"  skipped (not images): {', '.join(skipped)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chapter4_serving_patterns.edge_ai_pattern.edge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, metavar="DIR", help="classify the PNG/JPEG files of DIR")
    source.add_argument("--frames", type=int, metavar="N", help="classify N generated camera frames")
    parser.add_argument("--model", choices=["float", "int8", "both"], default="both")
    parser.add_argument("--throttle-ms", type=float, default=500.0, help="at least this long between analyses")
    parser.add_argument("--top", type=int, default=3, help="labels shown per frame")
    parser.add_argument("--float-model", type=Path, default=FLOAT_MODEL)
    parser.add_argument("--int8-model", type=Path, default=INT8_MODEL)
    parser.add_argument("--seed", type=int, default=0, help="of the generated frames")
    args = parser.parse_args(argv)
    if (args.frames is not None and args.frames < 1) or args.top < 1 or args.throttle_ms < 0:
        parser.error("--frames and --top must be 1 or more, --throttle-ms 0 or more")

    chosen = {"float": ["float"], "int8": ["int8"], "both": ["float", "int8"]}[args.model]
    paths = {"float": args.float_model, "int8": args.int8_model}
    hints = {
        "float": "`make setup` builds it",
        "int8": "make it with `python -m chapter4_serving_patterns.edge_ai_pattern.quantize`",
    }
    for name in chosen:
        if not paths[name].is_file():
            print(f"error: no {name} model at {paths[name]}; {hints[name]}", file=sys.stderr)
            return 2
    if args.images is not None and not args.images.is_dir():
        print(f"error: {args.images} is not a folder", file=sys.stderr)
        return 2

    try:
        # onnxruntime starts with its first session: an untimed one, so no model's load time carries the start.
        EdgeModel.load(chosen[0], paths[chosen[0]])
        models = [EdgeModel.load(name, paths[name]) for name in chosen]
    except Exception as error:  # onnxruntime's own exception types (InvalidProtobuf, Fail...) share no base
        print(f"error: cannot load a model: {error}", file=sys.stderr)
        return 2
    preprocess = ImagePreprocessor(shape=SHAPE)
    skipped: list[str] = []
    if args.images is not None:
        frames = folder_frames(args.images, preprocess, skipped)
    else:
        frames = generated_frames(args.frames, preprocess, args.seed)
    result = run(frames, models, Throttle(args.throttle_ms / 1000), args.top)
    if result["frames"] == 0:
        print(f"error: no image in {args.images} (PNG, JPEG, ...)", file=sys.stderr)
        return 2
    report(result, models, skipped, args.throttle_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
