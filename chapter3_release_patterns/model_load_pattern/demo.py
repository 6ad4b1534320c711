"""What the loader left in the shared volume, served by an API image that carries no model."""

from mlpatterns.demo import DemoClient


def demo(client: DemoClient) -> None:
    api = client.service("api")
    api.get("/health")
    api.get("/metadata")
    api.post(
        "/predict/label",
        {"data": [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]},
        answer={"prediction": ["setosa", "virginica"]},
    )
