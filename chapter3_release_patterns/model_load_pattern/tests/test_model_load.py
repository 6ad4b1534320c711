"""The model-load pattern: the API starts only on a model the loader fetched and verified."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from mlpatterns.runner import RunnerError
from mlpatterns.serving.app import create_serving_app
from mlpatterns.settings import ModelServingSettings
from mlpatterns.testing import start_pattern
from mlpatterns.training import iris

PATTERN = Path(__file__).parents[1]
MODELS = PATTERN.parents[1] / "models"


def test_the_api_serves_the_model_the_loader_fetched():
    with start_pattern(PATTERN) as run:
        assert "loaded http://127.0.0.1" in run.logs("loader") and "3 labels" in run.logs("loader")
        assert run.client("api").get("/predict/test/label").json() == {"prediction": ["setosa"]}


def test_a_model_named_by_the_loader_setting_is_served_without_rebuilding(tmp_path):
    """The same API, told by MODEL_SOURCE to load the random forest: a different model, same image."""
    with start_pattern(
        PATTERN, overrides={"loader": {"MODEL_SOURCE": "http://repository:8080/iris_rf/model.onnx"}}
    ) as run:
        scores = run.client("api").get("/predict/test").json()["prediction"][0]
        assert scores == pytest.approx([1.0, 0.0, 0.0], abs=0.05)  # the forest is sure; the SVC said 0.97


def publish(directory: Path, model: bytes, checksum: str | None = None) -> str:
    """A model source on disk: model.onnx, its .sha256 and the iris labels."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(model)
    (directory / "model.onnx.sha256").write_text(f"{checksum or hashlib.sha256(model).hexdigest()}  model.onnx\n")
    shutil.copy(MODELS / "iris_svc" / "labels.json", directory / "labels.json")
    return str(directory / "model.onnx")


def three_feature_model() -> bytes:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 3)).astype(np.float32)
    model = LogisticRegression().fit(features, rng.integers(0, 3, 30))
    return to_onnx(model, features[:1], options={id(model): {"zipmap": False}}, target_opset=17).SerializeToString()


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", r"http://127\.0\.0\.1:\d+/iris_svc/missing\.onnx answered 404"),
        ("corrupt", "onnxruntime cannot load the model"),
        ("tampered", "checksum mismatch"),
        ("wrong shape", r"the model takes rows of shape \[3\], the API serves \[4\]"),
        ("no checksum", "no checksum for"),
    ],
)
def test_the_loader_fails_loudly_and_the_api_never_starts(tmp_path, case, message):
    good = (MODELS / "iris_svc" / "model.onnx").read_bytes()
    source = {
        "missing": lambda: "http://repository:8080/iris_svc/missing.onnx",
        "corrupt": lambda: publish(tmp_path, b"\x08\x07 not an onnx model"),
        "tampered": lambda: publish(tmp_path, good[:-8] + b"\x00" * 8, checksum=hashlib.sha256(good).hexdigest()),
        "wrong shape": lambda: publish(tmp_path, three_feature_model()),
        "no checksum": lambda: (publish(tmp_path, good), (tmp_path / "model.onnx.sha256").unlink())[0],
    }[case]()
    with pytest.raises(
        RunnerError, match=r"(?s)^loader failed with exit code 1:.*model loader failed: .*" + message
    ) as failure:
        with start_pattern(PATTERN, overrides={"loader": {"MODEL_SOURCE": source}}):
            pass
    assert "api" not in str(failure.value).split(":")[0]


def test_the_images_carry_no_model():
    instructions = [line for line in (PATTERN / "Dockerfile").read_text().splitlines() if not line.startswith("#")]
    assert not any("mlpatterns.training" in line or "COPY --from" in line or ".onnx" in line for line in instructions)


def test_the_api_refuses_to_start_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model at"):
        create_serving_app(ModelServingSettings(MODEL_PATH=str(tmp_path / "model.onnx")))


def test_the_loader_loads_the_model_named_in_model_db(tmp_path, monkeypatch):
    """Train the forest with MODEL_DB_URL set (the trainer registers the run), then name it to the loader."""
    with start_pattern(PATTERN.parents[1] / "chapter2_training" / "model_db") as registry:
        monkeypatch.setenv("MODEL_DB_URL", registry.url("model_db"))
        iris.build("rf", out=tmp_path)
        loader = {"MODEL_SOURCE": "", "MODEL_DB_URL": registry.url("model_db"), "MODEL_NAME": "iris_rf"}
        with start_pattern(PATTERN, overrides={"loader": loader}) as run:
            assert "model_db: iris/iris_rf is experiment" in run.logs("loader")
            assert f"loaded {tmp_path}/iris_rf/model.onnx" in run.logs("loader")
            scores = run.client("api").get("/predict/test").json()["prediction"][0]
            assert scores == pytest.approx([1.0, 0.0, 0.0], abs=0.05)
        unknown = {**loader, "MODEL_NAME": "iris_knn"}
        with pytest.raises(RunnerError, match="project 'iris' has no model named 'iris_knn'"):
            with start_pattern(PATTERN, overrides={"loader": unknown}):
                pass
