"""The book's example requests against a running microservice horizontal pattern: one request, three models."""

from mlpatterns.demo import DemoClient

SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [5.9, 3.0, 4.2, 1.5]
VIRGINICA = [6.3, 3.3, 6.0, 2.5]


def demo(client: DemoClient) -> None:
    proxy = client.service("proxy")
    proxy.get("/health")
    proxy.get("/metadata")
    proxy.get("/health/all")
    proxy.get("/predict/get/test")
    proxy.get("/predict/post/test")
    # The fan-out: every backend asked at once; the answer is as slow as the slowest, not the sum of them.
    answer = proxy.post("/predict", {"data": [SETOSA]})
    for name, part in answer.json().items():
        print(f"     {name:<10} status {part['status']}  {part['seconds'] * 1000:6.1f} ms  {part.get('prediction')}")
    print(f"     Server-Timing: {answer.headers['server-timing']}")
    for row in (SETOSA, VERSICOLOR, VIRGINICA, [1.0, 2.0, 3.0, 4.0]):
        proxy.post("/predict/label", {"data": [row]})
    # Every row of a batch is labelled (the original answered the first row only).
    proxy.post(
        "/predict/label",
        {"data": [SETOSA, VERSICOLOR, VIRGINICA]},
        answer={"prediction": [{"label": "setosa"}, {"label": "versicolor"}, {"label": "virginica"}]},
    )
    # Bad input is refused by the proxy (an empty batch) or, as the backends say it, passed on (a short row).
    proxy.post("/predict/label", {"data": []}, expect=422)
    proxy.post("/predict", {"data": [[5.1, 3.5, 1.4]]}, expect=422)
    proxy.post("/predict", {"rows": [SETOSA]}, expect=422)
