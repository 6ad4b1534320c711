"""The cifar10 training pipeline: four steps, each a command of its own, handing over by path.

    python -m chapter2_training.cifar10.pipeline preprocess --out build/cifar10/data [--cifar-dir DIR]
    python -m chapter2_training.cifar10.pipeline train      --in build/cifar10/data --out build/cifar10/model
    python -m chapter2_training.cifar10.pipeline build      --in build/cifar10/model --out models/cifar10
    python -m chapter2_training.cifar10.pipeline evaluate   --in models/cifar10 --data build/cifar10/data \\
                                                            --out build/cifar10/evaluation.json [--url URL]

preprocess writes the train/val/test splits and dataset.json; train writes model.onnx, labels.json and
metrics.json (skipped when up to date); build puts the model where the serving service expects it and checks
that it loads with the expected input; evaluate sends the test split to the service over HTTP (started from
this directory's docker-compose.yml unless --url names a running one) and writes the measured metrics.
Only the train step needs PyTorch.
"""

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from mlpatterns import registry
from mlpatterns.predictor import OnnxPredictor, load_labels
from mlpatterns.runner import RunnerError, run_pattern
from mlpatterns.training import images
from mlpatterns.training.artifacts import ModelArtifacts, fingerprint

PATTERN_DIR = Path(__file__).resolve().parent
SERVICE = "serve"  # the service's name in docker-compose.yml


class StepError(RuntimeError):
    """A step cannot run: a missing input, a model that does not fit the service, a failing service."""


# --- 1. preprocess ------------------------------------------------------------------------------------------


def preprocess(
    out: Path, cifar_dir: Path | None = None, val_size: float = 0.15, test_size: float = 0.15, seed: int = 0
) -> dict:
    splits, classes = images.make_splits(cifar_dir, val_size, test_size, seed)
    source = {
        "name": "cifar10" if cifar_dir else "digits",
        "path": str(cifar_dir) if cifar_dir else None,
        "val_size": val_size,
        "test_size": None if cifar_dir else test_size,
        "seed": seed,
    }
    description = images.write_splits(out, splits, classes, source)
    counts = ", ".join(f"{name} {split['count']}" for name, split in description["splits"].items())
    print(
        f"preprocess: {source['name']} -> {out}: {counts} images of {description['image_shape']}, "
        f"{len(classes)} classes; mean {_rounded(description['normalisation']['mean'])}, "
        f"std {_rounded(description['normalisation']['std'])} (training split)"
    )
    return description


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 2) for v in values]


# --- 2. train -----------------------------------------------------------------------------------------------


def train(
    data_dir: Path,
    out: Path,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
    threads: int = 1,
    force: bool = False,
) -> ModelArtifacts:
    try:
        import torch

        from mlpatterns.training import cnn
    except ModuleNotFoundError as missing:
        raise StepError(f"the train step needs PyTorch ({missing}): `make setup` installs it") from None
    description = images.read_description(data_dir)
    config = cnn.TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    params = {
        **asdict(config),
        "model": "small_cnn",
        "opset": cnn.ONNX_OPSET,
        "threads": threads,
        "data": {name: split["sha256"] for name, split in description["splits"].items()},
    }
    stamp = fingerprint([Path(cnn.__file__)], params, ["torch", "numpy"])
    artifacts = ModelArtifacts(out)
    if not force and artifacts.recorded_fingerprint() == stamp:
        print(f"train: up to date ({out}; --force retrains)")
        return artifacts
    # A fixed thread count, not one per core: how a convolution's sums are split over threads changes their
    # rounding, so only the same count gives the same weights on another machine (of the same CPU kind).
    torch.set_num_threads(threads)
    train_set, val_set = images.read_split(data_dir, "train"), images.read_split(data_dir, "val")
    started = time.perf_counter()
    norm = description["normalisation"]
    model, history = cnn.train(train_set, val_set, len(description["classes"]), norm["mean"], norm["std"], config)
    onnx_bytes = cnn.export_onnx(model)
    metrics = {
        "model": "cifar10_small_cnn",
        "params": params,
        "fingerprint": stamp,
        "data": str(data_dir),
        "train_accuracy": history[-1]["train_accuracy"],
        "val_accuracy": history[-1]["val_accuracy"],
        "epochs": history,
        "training_seconds": round(time.perf_counter() - started, 1),
        **cnn.compare_onnx(model, onnx_bytes, val_set),
    }
    artifacts.write(onnx_bytes, dict(enumerate(description["classes"])), metrics)
    print(
        f"train: val accuracy {metrics['val_accuracy']:.4f} after {epochs} epochs "
        f"({metrics['training_seconds']} s); ONNX agrees with torch on {metrics['onnx_agreement']:.0%} of val "
        f"(max |logit diff| {metrics['onnx_max_abs_diff']:.1e}) -> {out}"
    )
    return artifacts


# --- 3. build -----------------------------------------------------------------------------------------------


def build(model_dir: Path, out: Path) -> ModelArtifacts:
    """Put the trained model where the service expects it and check that it serves the expected input."""
    trained, served = ModelArtifacts(model_dir), ModelArtifacts(out)
    if trained.recorded_fingerprint() is None:
        raise StepError(f"{model_dir}: no complete model (model.onnx, labels.json, metrics.json); run the train step")
    if served.directory.resolve() != trained.directory.resolve():
        served.write(trained.model.read_bytes(), load_labels(trained.labels), json.loads(trained.metrics.read_text()))
    predictor = OnnxPredictor(served.model, served.labels).load()
    if predictor.feature_shape != list(images.IMAGE_SHAPE) or predictor.input_dtype != np.float32:
        raise StepError(
            f"{served.model} takes {np.dtype(predictor.input_dtype).name} {predictor.input_shape}; "
            f"the service sends float32 [N, {', '.join(map(str, images.IMAGE_SHAPE))}]"
        )
    scores = predictor.predict(np.zeros((2, *images.IMAGE_SHAPE), np.float32)).scores
    if scores.shape != (2, len(predictor.labels)):
        raise StepError(
            f"{served.model} answers a batch of 2 with scores of shape {scores.shape}, not (2, {len(predictor.labels)})"
        )
    print(
        f"build: {out} serves float32 [N, 3, 32, 32] -> {len(predictor.labels)} classes "
        f"(the service reads MODEL_PATH, default models/cifar10/model.onnx)"
    )
    return served


# --- 4. evaluate --------------------------------------------------------------------------------------------


def evaluate(model_dir: Path, data_dir: Path, out: Path, url: str | None = None, batch_size: int = 32) -> dict:
    """The test split through the serving service's HTTP API: accuracy, per-class scores, latency, throughput."""
    test, classes = images.read_split(data_dir, "test"), images.read_description(data_dir)["classes"]
    model = (model_dir / "model.onnx").resolve()
    if ModelArtifacts(model_dir).recorded_fingerprint() is None:
        raise StepError(f"{model_dir}: no complete model; run the build step into it (--in names the served model)")
    if url:
        report = measure(url, test, classes, batch_size)
    else:
        with run_pattern(PATTERN_DIR, free_ports=True, overrides={SERVICE: {"MODEL_PATH": str(model)}}) as run:
            report = measure(run.url(SERVICE), test, classes, batch_size)
    report |= {"model": str(model_dir), "data": str(data_dir)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    latency = report["latency_ms"]
    print(
        f"evaluate: accuracy {report['accuracy']:.4f} on {report['test_images']} test images through "
        f"{report['url']} ({report['requests']} requests of up to {batch_size} images: p50 {latency['p50']:.1f} ms, "
        f"p99 {latency['p99']:.1f} ms, {report['images_per_second']:.0f} images/s) -> {out}"
    )
    per_class = report["per_class"].items()
    print(
        "  per class (precision / recall / f1): "
        + ", ".join(f"{name} {s['precision']:.2f}/{s['recall']:.2f}/{s['f1-score']:.2f}" for name, s in per_class)
    )
    register_run(model_dir, data_dir, out, report)
    return report


def measure(url: str, test: images.ImageSet, classes: list[str], batch_size: int) -> dict:
    bodies = [json.dumps({"data": test.images[i : i + batch_size].tolist()}) for i in range(0, len(test), batch_size)]
    predicted, latencies = [], []
    with httpx.Client(base_url=url, timeout=60, headers={"content-type": "application/json"}) as client:

        def classify(body: str) -> list[str]:
            response = client.post("/predict/label", content=body)
            if response.status_code != 200:
                raise StepError(f"{url}/predict/label answered {response.status_code}: {response.text[:300]}")
            return response.json()["prediction"]

        classify(bodies[0])  # connected and warm before the clock starts: one untimed request
        started = time.perf_counter()
        for body in bodies:
            sent = time.perf_counter()
            predicted += classify(body)
            latencies.append(time.perf_counter() - sent)
        elapsed = time.perf_counter() - started
    truth = [classes[label] for label in test.labels]
    scores = classification_report(truth, predicted, labels=classes, output_dict=True, zero_division=0)
    return {
        "accuracy": accuracy_score(truth, predicted),
        "per_class": {name: scores[name] for name in classes},
        "macro_avg": scores["macro avg"],
        "confusion_matrix": confusion_matrix(truth, predicted, labels=classes).tolist(),
        "test_images": len(truth),
        "requests": len(bodies),
        "batch_size": batch_size,
        "latency_ms": {q: float(np.percentile(latencies, p)) * 1000 for q, p in [("p50", 50), ("p99", 99)]},
        "images_per_second": len(truth) / elapsed,
        "url": url,
    }


def register_run(model_dir: Path, data_dir: Path, report_path: Path, report: dict) -> str | None:
    """Record this run in model_db (project cifar10, model small_cnn, an experiment with its parameters,
    metrics and artifact paths) when MODEL_DB_URL names one; say so when it does not."""
    artifacts = ModelArtifacts(model_dir)
    metrics = json.loads(artifacts.metrics.read_text())
    paths = {**artifacts.registry_paths(), "evaluation": str(report_path.resolve()), "data": str(data_dir.resolve())}
    return registry.register_run(
        project="cifar10",
        model="small_cnn",
        version=f"small_cnn-{metrics['fingerprint']}",
        parameters=metrics["params"],
        evaluations={
            "test_accuracy": report["accuracy"],
            "test_macro_f1": report["macro_avg"]["f1-score"],
            "test_f1": {name: scores["f1-score"] for name, scores in report["per_class"].items()},
            "train_accuracy": metrics["train_accuracy"],
            "val_accuracy": metrics["val_accuracy"],
            "latency_ms": report["latency_ms"],
            "images_per_second": report["images_per_second"],
        },
        artifact_file_paths=paths,
        **{
            f"{split}_dataset": str((data_dir / f"{name}.npz").resolve())
            for split, name in [("training", "train"), ("validation", "val"), ("test", "test")]
        },
    )


# --- command line -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chapter2_training.cifar10.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = parser.add_subparsers(dest="step", required=True)
    step = steps.add_parser("preprocess", help="split the data set and describe it")
    step.add_argument("--out", type=Path, required=True, help="directory for train/val/test.npz and dataset.json")
    step.add_argument("--cifar-dir", type=Path, help="CIFAR-10's python batches (default: scikit-learn's digits)")
    step.add_argument("--val-size", type=float, default=0.15, help="share of the training data held out")
    step.add_argument("--test-size", type=float, default=0.15, help="share held out for test (digits only)")
    step.add_argument("--seed", type=int, default=0)
    step = steps.add_parser("train", help="train the CNN and export it to ONNX")
    step.add_argument("--in", dest="data", type=Path, required=True, help="the preprocess step's directory")
    step.add_argument("--out", type=Path, required=True, help="model directory (model.onnx, labels.json, metrics.json)")
    step.add_argument("--epochs", type=int, default=6)
    step.add_argument("--batch-size", type=int, default=32)
    step.add_argument("--learning-rate", type=float, default=0.01)
    step.add_argument("--seed", type=int, default=0)
    step.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the same weights on any machine of this CPU kind)",
    )
    step.add_argument("--force", action="store_true", help="retrain even when the model is up to date")
    step = steps.add_parser("build", help="put the model where the service expects it and check it loads")
    step.add_argument("--in", dest="model", type=Path, required=True, help="the train step's model directory")
    step.add_argument("--out", type=Path, default=Path("models/cifar10"), help="the model directory the service reads")
    step = steps.add_parser("evaluate", help="measure the served model on the test split over HTTP")
    step.add_argument(
        "--in", dest="model", type=Path, default=Path("models/cifar10"), help="the served model directory"
    )
    step.add_argument("--data", type=Path, required=True, help="the preprocess step's directory (its test split)")
    step.add_argument("--out", type=Path, required=True, help="the evaluation report (JSON)")
    step.add_argument("--url", help="a running service to call (default: start one from docker-compose.yml)")
    step.add_argument("--batch-size", type=int, default=32, help="images per request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    try:
        if args.step == "preprocess":
            preprocess(args.out, args.cifar_dir, args.val_size, args.test_size, args.seed)
        elif args.step == "train":
            train(
                args.data,
                args.out,
                args.epochs,
                args.batch_size,
                args.learning_rate,
                args.seed,
                args.threads,
                args.force,
            )
        elif args.step == "build":
            build(args.model, args.out)
        else:
            evaluate(args.model, args.data, args.out, args.url, args.batch_size)
    except (StepError, FileNotFoundError, RunnerError, registry.RegistryError, httpx.HTTPError) as error:
        print(f"{args.step}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
