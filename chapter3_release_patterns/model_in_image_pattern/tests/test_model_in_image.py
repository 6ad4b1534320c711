"""The model-in-image pattern: the service finds its model with nothing configured from outside."""

from pathlib import Path

import pytest
import yaml

from mlpatterns.settings import ModelServingSettings
from mlpatterns.testing import start_pattern

PATTERN = Path(__file__).parents[1]
MODEL_SETTINGS = {"MODEL_PATH", "MODEL_FILEPATH", "LABEL_PATH", "LABEL_FILEPATH"}


@pytest.fixture(scope="module")
def api():
    with pytest.MonkeyPatch.context() as env:
        for name in MODEL_SETTINGS:  # nothing from the caller's environment either
            env.delenv(name, raising=False)
        with start_pattern(PATTERN) as run:
            yield run.client("api")


def test_serves_the_model_it_carries(api):
    assert api.get("/predict/test/label").json() == {"prediction": ["setosa"]}
    answer = api.post("/predict/label", json={"data": [[6.3, 3.3, 6.0, 2.5], [5.9, 3.0, 4.2, 1.5]]})
    assert answer.json() == {"prediction": ["virginica", "versicolor"]}


def test_no_model_location_is_configured_anywhere():
    compose = yaml.safe_load((PATTERN / "docker-compose.yml").read_text())["services"]["api"]
    deployment = yaml.safe_load((PATTERN / "manifests" / "deployment.yml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    dockerfile_env = [
        line for line in (PATTERN / "Dockerfile").read_text().splitlines() if line.startswith(("ENV", "ARG"))
    ]
    assert not MODEL_SETTINGS & set(compose.get("environment", {}))
    assert not MODEL_SETTINGS & {variable["name"] for variable in container.get("env", [])}
    assert not any(name in line for name in MODEL_SETTINGS for line in dockerfile_env)
    assert not deployment["spec"]["template"]["spec"].get("volumes", []) or all(
        "emptyDir" in volume for volume in deployment["spec"]["template"]["spec"]["volumes"]
    )


def test_the_image_bakes_the_model_where_the_service_looks_by_default():
    default = ModelServingSettings.model_fields["model_path"].default  # models/iris_svc/model.onnx, under WORKDIR /app
    final_stage = (PATTERN / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    assert "WORKDIR /app" in final_stage
    assert f"COPY --from=model /app/{default.parent} {default.parent}" in final_stage
