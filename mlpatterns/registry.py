"""A small client of the model management DB (chapter2_training/model_db), for training jobs to register runs.

    with ModelRegistry("http://127.0.0.1:8000") as registry:
        project_id = registry.ensure_project("iris")
        model_id = registry.ensure_model(project_id, "iris_svc")
        experiment_id = registry.add_experiment(model_id, "iris_svc_0.1.0", parameters={"C": 1.0})
        registry.merge_evaluations(experiment_id, {"accuracy": 0.97})
"""

from typing import Any

import httpx


class RegistryError(RuntimeError):
    def __init__(self, status_code: int, detail):
        super().__init__(f"model registry answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class ModelRegistry:
    def __init__(self, base_url: str, timeout: float = 10.0):
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json=body)
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

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "ModelRegistry":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
