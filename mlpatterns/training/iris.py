"""One parameterised trainer for the four iris models of chapter 2 (batch training pattern).

    python -m mlpatterns.training.iris svc                     # StandardScaler + calibrated SVC, 3 species
    python -m mlpatterns.training.iris rf                      # StandardScaler + random forest
    python -m mlpatterns.training.iris outlier                 # StandardScaler + one-class SVM (nu=0.1)
    python -m mlpatterns.training.iris binary --target setosa  # one-vs-rest: 1 = the target species

Deterministic (fixed seeds, stratified split), exported to ONNX with skl2onnx (zipmap off: probabilities come
out as a plain (N, C) tensor), with labels.json and metrics.json beside the model.
"""

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, OneClassSVM

from mlpatterns.registry import register_run
from mlpatterns.training.artifacts import MODELS_DIR, ModelArtifacts, fingerprint

logger = logging.getLogger("mlpatterns.training.iris")

KINDS = ("svc", "rf", "outlier", "binary")
SPECIES = ("setosa", "versicolor", "virginica")
TARGET_OPSET = 17


def default_name(kind: str, target: str | None) -> str:
    return {"svc": "iris_svc", "rf": "iris_rf", "outlier": "iris_ocs"}.get(kind) or f"iris_binary_{target}"


def build_estimator(kind: str, seed: int):
    if kind in ("svc", "binary"):
        # SVC(probability=True) is deprecated since scikit-learn 1.9; this is its documented replacement.
        classifier = CalibratedClassifierCV(SVC(random_state=seed), ensemble=False)
    elif kind == "rf":
        classifier = RandomForestClassifier(n_estimators=100, random_state=seed)
    else:
        classifier = OneClassSVM(nu=0.1, gamma="auto")
    return Pipeline([("scaler", StandardScaler()), ("model", classifier)])


def export_onnx(pipeline: Pipeline, sample: np.ndarray) -> bytes:
    options = {} if isinstance(pipeline[-1], OneClassSVM) else {id(pipeline): {"zipmap": False}}
    with warnings.catch_warnings():
        # skl2onnx's SVC converter reads SVC.probA_/probB_, deprecated in scikit-learn 1.9 even where unused.
        warnings.filterwarnings("ignore", message="Attribute `prob[AB]_` was deprecated", category=FutureWarning)
        return to_onnx(pipeline, sample, options=options, target_opset=TARGET_OPSET).SerializeToString()


def onnx_predict(onnx_bytes: bytes, features: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: features})[0].reshape(-1)


def train(kind: str, target: str | None, test_size: float, seed: int) -> tuple[bytes, dict[int, str], dict]:
    """Fit, evaluate and export one model. Returns the ONNX bytes, the labels and the metrics."""
    features, species = load_iris(return_X_y=True)
    features = features.astype(np.float32)  # what the served model takes
    if kind == "outlier":
        # Unsupervised: fit on every row; the metric is the share of training rows it calls outliers (~nu).
        pipeline = build_estimator(kind, seed).fit(features)
        onnx_bytes = export_onnx(pipeline, features[:1])
        predicted = pipeline.predict(features)
        metrics = {
            "outlier_rate": float(np.mean(predicted == -1)),
            "rows": len(features),
            "onnx_agreement": float(np.mean(onnx_predict(onnx_bytes, features) == predicted)),
        }
        return onnx_bytes, {-1: "outlier", 1: "inlier"}, metrics

    if kind == "binary":
        index = SPECIES.index(target)
        targets = (species == index).astype(np.int64)
        labels = {0: f"not_{target}", 1: target}
    else:
        targets = species
        labels = dict(enumerate(SPECIES))
    x_train, x_test, y_train, y_test = train_test_split(
        features, targets, test_size=test_size, random_state=seed, stratify=targets
    )
    pipeline = build_estimator(kind, seed).fit(x_train, y_train)
    onnx_bytes = export_onnx(pipeline, x_train[:1])
    predicted = pipeline.predict(x_test)
    names = [labels[k] for k in sorted(labels)]
    metrics = {
        "accuracy": accuracy_score(y_test, predicted),
        "per_class": classification_report(y_test, predicted, target_names=names, output_dict=True, zero_division=0),
        "confusion_matrix": confusion_matrix(y_test, predicted).tolist(),
        "train_rows": len(x_train),
        "test_rows": len(x_test),
        "onnx_agreement": float(np.mean(onnx_predict(onnx_bytes, x_test) == predicted)),
    }
    return onnx_bytes, labels, metrics


def summary(name: str, metrics: dict) -> str:
    if "outlier_rate" in metrics:
        return f"{name}: outlier rate {metrics['outlier_rate']:.3f} on {metrics['rows']} training rows"
    per_class = ", ".join(
        f"{label} f1={scores['f1-score']:.3f}"
        for label, scores in metrics["per_class"].items()
        if isinstance(scores, dict) and label not in ("macro avg", "weighted avg")
    )
    return f"{name}: accuracy {metrics['accuracy']:.3f} on {metrics['test_rows']} test rows ({per_class})"


def build(
    kind: str,
    target: str | None = None,
    out: Path = MODELS_DIR,
    name: str | None = None,
    test_size: float = 0.3,
    seed: int = 0,
    force: bool = False,
) -> ModelArtifacts:
    """Train and write one model unless an identical one is already there."""
    if kind == "binary" and target not in SPECIES:
        raise ValueError(f"binary needs --target, one of {', '.join(SPECIES)}")
    name = name or default_name(kind, target)
    artifacts = ModelArtifacts(out / name)
    params = {"kind": kind, "target": target, "test_size": test_size, "seed": seed, "opset": TARGET_OPSET}
    stamp = fingerprint([Path(__file__)], params, ["scikit-learn", "skl2onnx", "numpy"])
    if not force and artifacts.recorded_fingerprint() == stamp:
        logger.info("%s: up to date (%s)", name, artifacts.directory)
        return artifacts
    started = time.perf_counter()
    onnx_bytes, labels, metrics = train(kind, target, test_size, seed)
    artifacts.write(onnx_bytes, labels, {"model": name, "params": params, "fingerprint": stamp, **metrics})
    logger.info("%s (%.1f s) -> %s", summary(name, metrics), time.perf_counter() - started, artifacts.directory)
    register_run(
        project="iris",
        model=name,
        version=f"{name}-{stamp}",
        parameters=params,
        evaluations={k: v for k, v in metrics.items() if k != "per_class"},
        artifact_file_paths=artifacts.registry_paths(),
        training_dataset="sklearn.datasets.load_iris",
        test_dataset="none: fitted on all rows"
        if kind == "outlier"
        else f"stratified {test_size:.0%} split, seed {seed}",
    )
    return artifacts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=KINDS + ("all",), help="which model; 'all' builds every model the patterns use")
    parser.add_argument("--target", choices=SPECIES, help="the species of a binary model")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="parent directory of the model directory")
    parser.add_argument(
        "--name", help="model directory name (default: iris_svc, iris_rf, iris_ocs, iris_binary_<target>)"
    )
    parser.add_argument("--test-size", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="retrain even when the model is up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        if args.kind == "all":
            for kind, target in [("svc", None), ("rf", None), ("outlier", None)] + [("binary", s) for s in SPECIES]:
                build(kind, target, args.out, None, args.test_size, args.seed, args.force)
        else:
            build(args.kind, args.target, args.out, args.name, args.test_size, args.seed, args.force)
    except ValueError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
