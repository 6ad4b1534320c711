"""The book's example requests against a running web single service."""

from mlpatterns.demo import DemoClient


def demo(client: DemoClient) -> None:
    web = client.service("web")
    web.get("/health")
    web.get("/metadata")
    web.get("/label")
    web.get("/predict/test")
    web.post("/predict", {"data": [[5.1, 3.5, 1.4, 0.2]]})
    web.post("/predict/label", {"data": [[5.1, 3.5, 1.4, 0.2]]})
    web.post("/predict/label", {"data": [[1.0, 2.0, 3.0, 4.0]]})
    # Unlike the original, every row of a batch is predicted.
    web.post(
        "/predict/label",
        {"data": [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.3, 3.3, 6.0, 2.5]]},
        answer={"prediction": ["setosa", "versicolor", "virginica"]},
    )
    # The same model over the open inference protocol (KServe's, Triton's): a typed tensor, flat, with its shape.
    web.post(
        "/v2/models/iris_svc/infer",
        {
            "inputs": [
                {"name": "X", "shape": [2, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2, 6.3, 3.3, 6.0, 2.5]}
            ]
        },
    )
    # Bad input is a clear 4xx, not a silently substituted sample.
    web.post("/predict", {"rows": [[5.1, 3.5, 1.4, 0.2]]}, expect=422)
    web.post("/predict", {"data": [[5.1, 3.5, 1.4]]}, expect=422)
