"""A small client of the model management DB (chapter2_training/model_db), for training jobs to register runs.

with ModelRegistry("http://127.0.0.1:8000") as registry:
    project_id = registry.ensure_project("iris")
    model_id = registry.ensure_model(project_id, "iris_svc")
    experiment_id = registry.add_experiment(model_id, "iris_svc_0.1.0", parameters={"C": 1.0})
    registry.merge_evaluations(experiment_id, {"accuracy": 0.97})
"""

import logging
import os
from typing import Any

import httpx

logger = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    def __init__(self, status_code: int, detail):
        super().__init__(f"model registry answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class ModelRegistry:
    def __init__(self, base_url: str, timeout: float = 10.0):
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._check(self.http.post(path, json=body))

    def _get(self, path: str) -> Any:
        return self._check(self.http.get(path))

    @staticmethod
    def _check(response: httpx.Response) -> Any:
        if response.is_error:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise RegistryError(response.status_code, detail)
        return response.json()

    def ensure_project(self, name: str, description: str | None = None) -> str:
        """The id of the project of this name, created if it does not exist yet."""
        return self._post("/api/projects", {"project_name": name, "description": description})["project_id"]

    def ensure_model(self, project_id: str, name: str, description: str | None = None) -> str:
        body = {"project_id": project_id, "model_name": name, "description": description}
        return self._post("/api/models", body)["model_id"]

    def add_experiment(self, model_id: str, model_version_id: str, **fields: Any) -> str:
        """A new experiment. `fields`: parameters, training_dataset, validation_dataset, test_dataset,
        evaluations, artifact_file_paths."""
        body = {"model_id": model_id, "model_version_id": model_version_id, **fields}
        return self._post("/api/experiments", body)["experiment_id"]

    def merge_evaluations(self, experiment_id: str, evaluations: dict[str, Any]) -> dict[str, Any]:
        """Adds the keys to the experiment's evaluations; returns all of them."""
        return self._post(f"/api/experiments/evaluations/{experiment_id}", {"evaluations": evaluations})["evaluations"]

    def merge_artifact_paths(self, experiment_id: str, paths: dict[str, str]) -> dict[str, Any]:
        body = {"artifact_file_paths": paths}
        return self._post(f"/api/experiments/artifact-file-paths/{experiment_id}", body)["artifact_file_paths"]

    def latest_experiment(self, project_name: str, model_name: str) -> dict[str, Any]:
        """The newest experiment of a model, found by project and model name."""
        project = self._get(f"/api/projects/name/{project_name}")
        # List routes answer a page at a time: models of one name are few, and the newest experiment is first
        # when asked for in descending order.
        named = self._get(f"/api/models/name/{model_name}?limit=1000")
        models = [m for m in named if m["project_id"] == project["project_id"]]
        if not models:
            raise RegistryError(404, f"project {project_name!r} has no model named {model_name!r}")
        experiments = self._get(f"/api/experiments/model-id/{models[0]['model_id']}?order=desc&limit=1")
        if not experiments:
            raise RegistryError(404, f"model {model_name!r} has no experiment yet")
        return experiments[0]

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "ModelRegistry":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def register_run(
    *,
    project: str,
    model: str,
    version: str,
    parameters: dict[str, Any],
    evaluations: dict[str, Any],
    artifact_file_paths: dict[str, str],
    url: str | None = None,
    **datasets: str,
) -> str | None:
    """Record a training run in model_db when MODEL_DB_URL (or `url`) names one; say so when it does not.

    `datasets`: training_dataset, validation_dataset, test_dataset (descriptions or paths).
    """
    url = url or os.environ.get("MODEL_DB_URL")
    if not url:
        logger.info("model_db: not configured (set MODEL_DB_URL to register this run)")
        return None
    with ModelRegistry(url) as registry:
        model_id = registry.ensure_model(registry.ensure_project(project), model)
        experiment_id = registry.add_experiment(
            model_id,
            version,
            parameters=parameters,
            evaluations=evaluations,
            artifact_file_paths=artifact_file_paths,
            **datasets,
        )
    logger.info("model_db: registered %s/%s version %s as experiment %s", project, model, version, experiment_id)
    return experiment_id
