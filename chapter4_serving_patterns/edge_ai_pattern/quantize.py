"""Package the digits CNN for the device: the float ONNX model -> an int8 one, with onnxruntime's quantization tools.

    python -m chapter4_serving_patterns.edge_ai_pattern.quantize \\
        --model models/cifar10/model.onnx --out models/edge_ai/model.int8.onnx

Static quantization in the QDQ format (onnxruntime's recommended one for CPUs): int8 weights and uint8
activations, whose ranges are calibrated by running the float model over a fixed sample of the digits training
split (the cifar10 pipeline's own split), so two runs write the same bytes. The Softmax stays float, so the
scores shown are probabilities, not steps of 1/255. The float model is first prepared with
`quant_pre_process` (shape inference and graph optimisation), as quantize_static asks.

A record beside the output (`model.int8.json`) names the float model's sha256 and the settings, and holds the
measured agreement and accuracy on the test split. The step is skipped while the output, its record, the float
model and the settings still match, so set-up, the local runner and the Dockerfile can all call it.
"""

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

CALIBRATION_IMAGES = 200  # of the training split's 1,300: enough for stable min/max ranges on this small CNN
SEED = 0  # the pipeline's split seed; also picks the calibration sample


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_path(out: Path) -> Path:
    return out.with_suffix(".json")


def settings(calibration: int, seed: int) -> dict:
    return {
        "method": "quant_pre_process without symbolic shapes, then quantize_static, QDQ, uint8 activations, "
        "int8 weights per tensor, MinMax calibration",
        "calibration": {"split": "train", "images": calibration, "seed": seed},
        "onnxruntime": ort.__version__,  # another version may write other bytes
    }


def up_to_date(model: Path, out: Path, calibration: int = CALIBRATION_IMAGES, seed: int = SEED) -> bool:
    record = record_path(out)
    if not (out.is_file() and record.is_file()):
        return False
    written = json.loads(record.read_text())
    return (
        written.get("settings") == settings(calibration, seed)
        and written.get("source_sha256") == sha256(model)
        and written.get("sha256") == sha256(out)
    )


def quantize(model: Path, out: Path, calibration: int = CALIBRATION_IMAGES, seed: int = SEED) -> dict:
    """Write the int8 model, labels.json and the record; the record."""
    # The training-only packages (onnx, scikit-learn) are imported here: the edge client never needs them.
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    from mlpatterns.training.images import make_splits

    splits, _ = make_splits(None, 0.15, 0.15, seed)
    train = splits["train"]
    picked = np.sort(np.random.default_rng(seed).choice(len(train), size=calibration, replace=False))
    input_name = onnx.load(model).graph.input[0].name

    class Calibration(CalibrationDataReader):
        """One training image per call, as the float model takes it: (1, 3, 32, 32) float32 pixels 0..255."""

        def __init__(self):
            self.images = iter(train.images[picked])

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {input_name: image[None].astype(np.float32)}

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # The CNN's shapes are static: ONNX's own shape inference is enough, and symbolic inference would need
        # sympy, which only torch brings (the training base has no torch).
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        softmax = [node.name for node in onnx.load(prepared).graph.node if node.op_type == "Softmax"]
        written = Path(scratch) / "model.int8.onnx"
        quantize_static(
            str(prepared),
            str(written),
            Calibration(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=False,
            nodes_to_exclude=softmax,
        )
        shutil.move(written, out)  # the finished file only: never a half-written model at `out`
    labels = model.with_name("labels.json")
    if labels.is_file():
        shutil.copyfile(labels, out.with_name("labels.json"))
    record = {
        "source": str(model),
        "source_sha256": sha256(model),
        "settings": settings(calibration, seed),
        "sha256": sha256(out),
        "bytes": out.stat().st_size,
        "float_bytes": model.stat().st_size,
        "test_split": evaluate(model, out, splits["test"]),
    }
    record_path(out).write_text(json.dumps(record, indent=2) + "\n")
    return record


def evaluate(model: Path, out: Path, test) -> dict:
    """Top-1 of both models on the held-out test split: agreement and accuracy."""
    pixels = test.images.astype(np.float32)
    tops = {}
    for name, path in (("float", model), ("int8", out)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        tops[name] = session.run(None, {session.get_inputs()[0].name: pixels})[0].argmax(axis=1)
    return {
        "images": len(test),
        "agreement": float(np.mean(tops["float"] == tops["int8"])),
        "accuracy_float": float(np.mean(tops["float"] == test.labels)),
        "accuracy_int8": float(np.mean(tops["int8"] == test.labels)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chapter4_serving_patterns.edge_ai_pattern.quantize", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", type=Path, default=Path("models/cifar10/model.onnx"), help="the float ONNX model")
    parser.add_argument("--out", type=Path, default=Path("models/edge_ai/model.int8.onnx"), help="the int8 model")
    parser.add_argument("--calibration", type=int, default=CALIBRATION_IMAGES, help="training images to calibrate on")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"error: no float model at {args.model} (`make setup` builds models/cifar10/model.onnx)", file=sys.stderr)
        return 2
    if up_to_date(args.model, args.out, args.calibration, args.seed):
        print(f"{args.out}: up to date (made from {args.model}, sha256 {sha256(args.model)[:12]})")
        return 0
    record = quantize(args.model, args.out, args.calibration, args.seed)
    test = record["test_split"]
    print(
        f"{args.out}: {record['bytes']:,} bytes (float: {record['float_bytes']:,}), calibrated on "
        f"{args.calibration} training images; on the {test['images']} test images top-1 agreement "
        f"{test['agreement']:.1%}, accuracy float {test['accuracy_float']:.1%}, int8 {test['accuracy_int8']:.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
