"""A fast digits model: multinomial logistic regression on 8x8 average-pooled grey pixels, beside the digits CNN.

    python -m mlpatterns.training.digits_linear            # -> models/digits_linear/ (skipped when up to date)

It sees the digits exactly as the CNN does: the exported ONNX model takes the CNN's input, raw 0..255 float
pixels NCHW [N, 3, 32, 32], and pools them itself (the mean of the channels, then 4x4 average pooling: 64
features, the digits' own 8x8 resolution) before a StandardScaler and the logistic regression exported by
skl2onnx. So one decoded image feeds both models (the sync_async pattern's proxy and its CNN worker), and the
predictor checks it against the model's own input shape. Same data and split as the CNN
(`mlpatterns.training.images.make_splits`, seed 0: its held-out test set holds the shipped sample digits);
trained on the training and validation splits, scored on the test split, with labels.json and metrics.json
beside the model. About 10 microseconds per image against the CNN's ~1 ms.
"""

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from onnx.compose import merge_models
from skl2onnx import to_onnx
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlpatterns.training.artifacts import MODELS_DIR, ModelArtifacts, fingerprint
from mlpatterns.training.images import IMAGE_SHAPE, make_splits

logger = logging.getLogger("mlpatterns.training.digits_linear")

NAME = "digits_linear"
TARGET_OPSET = 17
POOL = 4  # 32x32 -> 8x8


def pooled(images: np.ndarray) -> np.ndarray:
    """(N, 3, 32, 32) pixels -> (N, 64) float32: what the ONNX model's first nodes compute, for training."""
    grey = images.astype(np.float32).mean(axis=1)
    side = IMAGE_SHAPE[1] // POOL
    return grey.reshape(len(images), side, POOL, side, POOL).mean(axis=(2, 4)).reshape(len(images), side * side)


def pooling_graph(features: str, ir_version: int) -> onnx.ModelProto:
    """images [N, 3, 32, 32] -> `features` [N, 64]: ReduceMean over the channels, AveragePool 4x4, Reshape."""
    side = IMAGE_SHAPE[1] // POOL
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("AveragePool", ["grey"], ["pooled"], kernel_shape=[POOL, POOL], strides=[POOL, POOL]),
        helper.make_node("Reshape", ["pooled", "flat_shape"], [features]),
    ]
    graph = helper.make_graph(
        nodes,
        "pool",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", *IMAGE_SHAPE])],
        [helper.make_tensor_value_info(features, TensorProto.FLOAT, ["N", side * side])],
        initializer=[helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, side * side])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TARGET_OPSET)])
    model.ir_version = ir_version
    return model


def export_onnx(pipeline: Pipeline, sample: np.ndarray) -> bytes:
    classifier = to_onnx(pipeline, sample, options={id(pipeline): {"zipmap": False}}, target_opset=TARGET_OPSET)
    features = classifier.graph.input[0].name
    front = pooling_graph("pooled_features", classifier.ir_version)
    model = merge_models(front, classifier, io_map=[("pooled_features", features)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def train(seed: int, c: float) -> tuple[bytes, dict[int, str], dict]:
    splits, classes = make_splits(None, 0.15, 0.15, seed)
    train_images = np.concatenate([splits["train"].images, splits["val"].images])
    train_labels = np.concatenate([splits["train"].labels, splits["val"].labels])
    test = splits["test"]
    pipeline = Pipeline([("scaler", StandardScaler()), ("model", LogisticRegression(C=c, max_iter=2000))])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # an unconverged fit is a bug here, not a warning
        pipeline.fit(pooled(train_images), train_labels)
    onnx_bytes = export_onnx(pipeline, pooled(train_images[:1]))
    predicted = pipeline.predict(pooled(test.images))
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_labels = session.run(["label"], {"images": test.images.astype(np.float32)})[0]
    metrics = {
        "accuracy": accuracy_score(test.labels, predicted),
        "confusion_matrix": confusion_matrix(test.labels, predicted).tolist(),
        "train_rows": len(train_labels),
        "test_rows": len(test),
        "onnx_agreement": float(np.mean(onnx_labels == predicted)),
    }
    return onnx_bytes, dict(enumerate(classes)), metrics


def build(out: Path = MODELS_DIR, name: str = NAME, seed: int = 0, c: float = 1.0, force: bool = False):
    """Train and write the model unless an identical one is already there."""
    artifacts = ModelArtifacts(out / name)
    params = {"seed": seed, "C": c, "features": "mean of channels, 4x4 average pool", "opset": TARGET_OPSET}
    sources = [Path(__file__), Path(__file__).with_name("images.py")]
    stamp = fingerprint(sources, params, ["scikit-learn", "skl2onnx", "onnx", "numpy", "scipy"])
    if not force and artifacts.recorded_fingerprint() == stamp:
        logger.info("%s: up to date (%s)", name, artifacts.directory)
        return artifacts
    started = time.perf_counter()
    onnx_bytes, labels, metrics = train(seed, c)
    artifacts.write(onnx_bytes, labels, {"model": name, "params": params, "fingerprint": stamp, **metrics})
    logger.info(
        "%s: accuracy %.3f on %d test digits (%.1f s) -> %s",
        name,
        metrics["accuracy"],
        metrics["test_rows"],
        time.perf_counter() - started,
        artifacts.directory,
    )
    return artifacts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="parent directory of the model directory")
    parser.add_argument("--name", default=NAME, help=f"model directory name (default {NAME})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--c", type=float, default=1.0, help="inverse regularisation strength (default 1.0)")
    parser.add_argument("--force", action="store_true", help="retrain even when the model is up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    build(args.out, args.name, args.seed, args.c, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
