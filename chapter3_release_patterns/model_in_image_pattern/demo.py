"""Requests that show which model the image carries."""

from mlpatterns.demo import DemoClient


def demo(client: DemoClient) -> None:
    api = client.service("api")
    api.get("/health")
    api.get("/metadata")
    api.get("/predict/test/label")
    api.post(
        "/predict/label",
        {"data": [[6.3, 3.3, 6.0, 2.5], [5.9, 3.0, 4.2, 1.5]]},
        answer={"prediction": ["virginica", "versicolor"]},
    )
