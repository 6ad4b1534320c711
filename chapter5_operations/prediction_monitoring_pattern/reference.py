"""`python -m chapter5_operations.prediction_monitoring_pattern.reference`: write reference.json, the training
reference the monitor compares with (and whose rows the load job replays).

Made from what the models were trained on: scikit-learn's 150 iris flowers (the trainer's data,
mlpatterns.training.iris) and the one-class model's share of outliers among them. A training-time step (it needs
scikit-learn); the serving images only read the file. A test checks the committed file equals a fresh build.
"""

import json
from pathlib import Path

import numpy as np

from chapter5_operations.prediction_monitoring_pattern.settings import REFERENCE_PATH
from mlpatterns.drift import Reference
from mlpatterns.predictor import OnnxPredictor

OUTLIER_MODEL = Path("models/iris_ocs/model.onnx")


def build(outlier_model: Path = OUTLIER_MODEL) -> dict:
    from sklearn.datasets import load_iris

    rows = load_iris().data
    scores = OnnxPredictor(outlier_model).load().predict(rows.astype(np.float32)).scores[:, 0]
    reference = Reference.from_rows(rows, outlier_rate=round(float((scores < 0).mean()), 6))
    return {**json.loads(reference.dumps()), "training_rows": rows.tolist()}


def dumps(built: dict) -> str:
    return json.dumps(built, separators=(",", ":")).replace('],"', '],\n"') + "\n"


def main() -> None:
    REFERENCE_PATH.write_text(dumps(build()))
    print(f"wrote {REFERENCE_PATH}")


if __name__ == "__main__":
    main()
