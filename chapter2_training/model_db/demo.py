"""Register a training run in a running model management DB, then look it up every way the API offers."""

from mlpatterns.demo import DemoClient


def demo(client: DemoClient) -> None:
    api = client.service("model_db")
    api.get("/v0.1/health")
    project = api.post("/api/projects", {"project_name": "iris", "description": "iris species classification"}).json()
    # the same name: the same project, not a second one
    api.post("/api/projects", {"project_name": "iris"}, answer={"project_id": project["project_id"]})
    model = api.post("/api/models", {"project_id": project["project_id"], "model_name": "iris_svc"}).json()
    experiment = api.post(
        "/api/experiments",
        {
            "model_id": model["model_id"],
            "model_version_id": "iris_svc_0.1.0",
            "parameters": {"C": 1.0, "kernel": "rbf"},
            "training_dataset": "sklearn.datasets.load_iris, 80% (seed 42)",
            "test_dataset": "sklearn.datasets.load_iris, 20% (seed 42)",
        },
    ).json()
    experiment_id = experiment["experiment_id"]
    # Merges keep what is stored: both keys are there afterwards (the original lost the second call).
    api.post(f"/api/experiments/evaluations/{experiment_id}", {"evaluations": {"accuracy": 0.97}})
    merged = api.post(f"/api/experiments/evaluations/{experiment_id}", {"evaluations": {"f1": 0.96}}).json()
    print(f"     evaluations now: {merged['evaluations']}")
    api.post(
        f"/api/experiments/artifact-file-paths/{experiment_id}",
        {"artifact_file_paths": {"model": "models/iris_svc/model.onnx"}},
    )
    api.get(f"/api/experiments/id/{experiment_id}")
    api.get("/api/experiments/model-version-id/iris_svc_0.1.0")
    api.get("/api/models/project-name/iris")
    api.get(f"/api/experiments/project-id/{project['project_id']}")
    # Unknown ids are a 404 that says what is missing; a bad body is a 422.
    api.get("/api/projects/id/no-such-project", expect=404)
    api.post("/api/models", {"project_id": "no-such-project", "model_name": "iris_svc"}, expect=404)
    api.post(f"/api/experiments/evaluations/{experiment_id}", {"evaluations": [0.97]}, expect=422)
