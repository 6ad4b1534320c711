"""The prediction cache at work: a miss then a hit for one item, X-Cache on each answer, and pred's own count of
what it predicted, which the hit leaves unchanged."""

import base64

from mlpatterns.demo import DemoClient, ServiceClient
from mlpatterns.items import ITEM_IDS, ItemStore

PREDICTED = "prediction_requests_total"  # pred's count of the tensors it was sent


def ask(proxy: ServiceClient, pred: ServiceClient, body: dict) -> None:
    before = pred.metric(PREDICTED)
    answer = proxy.post("/predict/label", body)
    predicted = pred.metric(PREDICTED) - before
    print(f"     X-Cache: {answer.headers.get('X-Cache')}; pred predicted {predicted:.0f} tensor(s) for it")


def demo(client: DemoClient) -> None:
    proxy, pred = client.service("proxy"), client.service("pred")
    proxy.get("/health")
    proxy.get("/metadata")  # the items, and what the cache holds: key, TTL
    proxy.get("/label")  # the labels live with the model: the proxy asks pred

    # The first request for item 0003 is a miss: loaded, preprocessed, predicted by pred, stored, answered.
    # The second is a hit: answered from Redis, pred is not asked.
    ask(proxy, pred, {"data": "0003"})
    ask(proxy, pred, {"data": "0003"})
    proxy.post("/predict", {"data": "0003"})  # the scores, from the same entry
    proxy.post("/predict/label", {"data": "0003"}, answer={"prediction": "3"})
    labels = {i: client.http.post(proxy.base_url + "/predict/label", json={"data": i}).json() for i in ITEM_IDS}
    print(f"\n  every item, by id: { ({i: answer['prediction'] for i, answer in labels.items()}) }")

    # An image of the client's own is cached by the digest of its bytes: a miss, then a hit.
    image = base64.b64encode(ItemStore().read("0006")).decode()
    ask(proxy, pred, {"image_data": image})
    ask(proxy, pred, {"image_data": image})

    # An unknown item is a 404 naming the items (the original answered 500); a malformed id is a 422.
    proxy.post("/predict", {"data": "0042"}, expect=404)
    proxy.post("/predict", {"data": "42"}, expect=422)
    metrics = proxy.client.http.get(proxy.base_url + "/metrics").text.splitlines()
    print("\n  the proxy's /metrics:\n    " + "\n    ".join(m for m in metrics if m.startswith(("cache_", "item_"))))
