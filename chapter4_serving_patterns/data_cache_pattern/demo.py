"""The data cache at work: a miss then a hit for one item, X-Cache on each answer, the proxy's count of items
loaded and preprocessed (unchanged on the hit) and pred's count of tensors predicted (rising every time)."""

from mlpatterns.demo import DemoClient, ServiceClient

PREPROCESSED = "item_preprocess_total"  # the proxy's count of inputs loaded and preprocessed
PREDICTED = "prediction_requests_total"  # pred's count of the tensors it was sent


def ask(proxy: ServiceClient, pred: ServiceClient, item_id: str) -> None:
    before = proxy.metric(PREPROCESSED), pred.metric(PREDICTED)
    answer = proxy.post("/predict/label", {"data": item_id}, answer={"prediction": str(int(item_id))})
    loaded, predicted = proxy.metric(PREPROCESSED) - before[0], pred.metric(PREDICTED) - before[1]
    print(
        f"     X-Cache: {answer.headers.get('X-Cache')}; the proxy loaded and preprocessed {loaded:.0f} item(s), "
        f"pred predicted {predicted:.0f} tensor(s)"
    )


def demo(client: DemoClient) -> None:
    proxy, pred = client.service("proxy"), client.service("pred")
    proxy.get("/health")
    proxy.get("/metadata")  # the items, and what the cache holds: (3, 32, 32) float32 tensors as .npy
    proxy.get("/label")

    # The first request for item 0005 is a miss: the JPEG is read, decoded and resized, the tensor stored, and
    # pred asked. The second is a hit: the tensor comes from Redis, no file is read or decoded; pred is still
    # asked, because the data cache saves the input's preparation, not the model's work.
    ask(proxy, pred, "0005")
    ask(proxy, pred, "0005")
    proxy.get("/predict/test")  # item 0000: a miss
    proxy.get("/predict/test")  # and a hit

    # An unknown item is a 404 naming the items (the original answered 500); a malformed id is a 422.
    proxy.post("/predict", {"data": "0042"}, expect=404)
    proxy.post("/predict", {"data": "five"}, expect=422)
    metrics = client.http.get(proxy.base_url + "/metrics").text.splitlines()
    print("\n  the proxy's /metrics:\n    " + "\n    ".join(m for m in metrics if m.startswith(("cache_", "item_"))))
