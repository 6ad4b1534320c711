"""The online A/B split, live: requests through the proxy and a running tally of the model that answered each,
converging on the weights; then sticky users, an arm asked for by name, and bad input."""

import collections
import math
from pathlib import Path

from mlpatterns.demo import DemoClient, ServiceClient
from mlpatterns.runner.compose import load_services

REQUESTS = 1000
SHOWN_AT = (10, 25, 50, 100, 250, 500, 1000)
BAR = 40
BORDERLINE = [4.9, 2.5, 4.5, 1.7]  # a virginica of the iris data on which the two models disagree


def svc_percent() -> int:
    """The split the proxy runs with: compose's SVC_PERCENT (the VirtualService's weight of model A)."""
    services = load_services(Path(__file__).with_name("docker-compose.yml"))
    return int(next(s for s in services if s.name == "proxy").environment["SVC_PERCENT"])


def mode_of(proxy: ServiceClient, headers: dict | None = None) -> str:
    """GET /predict/test through the proxy, unprinted (counted in the demo's summary): the model that answered."""
    answer = proxy.client.http.get(proxy.base_url + "/predict/test", headers=headers)
    if answer.status_code != 200:
        proxy.client.unexpected.append(f"GET proxy/predict/test -> {answer.status_code}")
        return f"HTTP {answer.status_code}"
    proxy.client.answered += 1
    return answer.json()["mode"]


def tally_line(tally: collections.Counter, weight: int) -> str:
    n = sum(tally.values())
    share = 100 * tally["iris_svc.onnx"] / n
    filled = round(BAR * share / 100)
    band = 100 * 2.576 * math.sqrt(weight / 100 * (1 - weight / 100) / n)  # 99% of the draws land within this
    return (
        f"  {n:5d}  iris_svc.onnx {share:5.1f}% {'#' * filled}{'.' * (BAR - filled)} {100 - share:5.1f}% iris_rf.onnx"
        f"   {share - weight:+5.1f} points off {weight}%, 99% band +-{band:4.1f}"
    )


def demo(client: DemoClient) -> None:
    proxy = client.service("proxy")
    proxy.get("/health")
    # Every answer names its model in `mode`; ask again and it may be the other one.
    proxy.get("/predict/test")
    proxy.post("/predict/label", {"data": [BORDERLINE]})

    weight = svc_percent()
    print(f"\n  The split: {REQUESTS} requests, each drawn anew, {weight}/{100 - weight} (SVC_PERCENT={weight})")
    tally = collections.Counter()
    for n in range(1, REQUESTS + 1):
        tally[mode_of(proxy)] += 1
        if n in SHOWN_AT:
            print(tally_line(tally, weight), flush=True)

    print("\n  Sticky: a request naming its user in X-User-ID is assigned by a hash of it, 10 requests per user")
    for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
        seen = collections.Counter(mode_of(proxy, {"X-User-ID": user}) for _ in range(10))
        print(f"     {user:<6} " + ", ".join(f"{mode} x{count}" for mode, count in seen.items()))

    print(f"\n  An arm asked for by name (X-AB-Arm, the VirtualService's header routes), on {BORDERLINE}:")
    for arm in ("svc", "rf"):
        answer = proxy.client.http.post(
            proxy.base_url + "/predict/label", json={"data": [BORDERLINE]}, headers={"X-AB-Arm": arm}
        )
        proxy.client.answered += answer.status_code == 200
        print(f"     X-AB-Arm: {arm:<4} -> {answer.status_code} {answer.text}")

    logs = client.logs("proxy")
    if logs:
        print("\n  The proxy's log names the model of every request (backend/server):")
        for line in logs.splitlines()[-3:]:
            print(f"     {line}")

    # Bad input is refused by the model that drew it, and passed on as it is.
    proxy.post("/predict", {"data": [[5.1, 3.5, 1.4]]}, expect=422)
    proxy.post("/predict/label", {"rows": [[5.1, 3.5, 1.4, 0.2]]}, expect=422)
