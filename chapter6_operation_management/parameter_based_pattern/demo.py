"""The parameters at work: the same rows decided by the proxy under the original's parameters, then by a proxy
started with others (virginica switched on, setosa's threshold raised to 0.99), beside the models' probabilities."""

import json
from pathlib import Path

from mlpatterns.demo import DemoClient, ServiceClient
from mlpatterns.runner import run_pattern

PATTERN = Path(__file__).parent
BACKENDS = ["setosa", "versicolor", "virginica"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [50.0, 30.1, 111.4, 110.2]]  # the reference's three inputs
PREDICTIONS = 'http_requests_total{method="POST",path="/predict"'  # a backend's /metrics: the predictions it made
OTHER = {"ACTIVATE_VIRGINICA": "1", "THRESHOLD_SETOSA": "0.99"}
# The reference's decisions of ROWS under the original's parameters (compose's defaults), then under OTHER.
DECIDED = [{"setosa": 1, "versicolor": 0}, {"setosa": 0, "versicolor": 0}, {"setosa": 0, "versicolor": 0}]
DECIDED_OTHER = [{"setosa": 0, "versicolor": 0, "virginica": 0}, {"setosa": 0, "versicolor": 0, "virginica": 1}]
DECIDED_OTHER += [{"setosa": 0, "versicolor": 0, "virginica": 0}]


def decide_each(proxy: ServiceClient, decided: list[dict]) -> list[str]:
    """Each row posted on its own (the original's one-row requests); the decisions as compact JSON."""
    pairs = zip(ROWS, decided, strict=True)
    answers = [proxy.post("/predict", {"data": [row]}, answer=answer).json() for row, answer in pairs]
    return [json.dumps(answer, separators=(",", ":")) for answer in answers]


def parameters(proxy_logs: str) -> str:
    """What the proxy's start-up line says of its parameters."""
    return next(line for line in proxy_logs.splitlines() if "parameters: " in line).split("parameters: ")[1]


def demo(client: DemoClient) -> None:
    proxy = client.service("proxy")
    proxy.get("/health")
    proxy.get("/metadata")  # each backend's URL, switch and threshold
    proxy.get("/health/all")  # every backend, switched on or not: ready to be switched on?
    proxy.get("/predict/get/test", answer=DECIDED[0])  # the sample is ROWS[0]
    proxy.get("/predict/post/test", answer=DECIDED[0])
    # What each model says, asked directly: the probabilities the thresholds are applied to.
    scores = {name: client.service(name).post("/predict", {"data": ROWS}).json()["prediction"] for name in BACKENDS}
    virginica = client.service("virginica")
    asked = virginica.metric(PREDICTIONS)
    first = decide_each(proxy, DECIDED)
    proxy.post("/predict", {"data": ROWS}, answer=DECIDED)  # a batch: every row decided, one object per row
    print(f"\n  virginica (switched off) was asked {virginica.metric(PREDICTIONS) - asked:g} times by the proxy")
    # Bad input is refused (as the backends would refuse it).
    proxy.post("/predict", {"data": []}, expect=422)
    proxy.post("/predict", {"data": [[5.1, 3.5, 1.4]]}, expect=422)
    proxy.post("/predict", {"rows": ROWS}, expect=422)
    settings = ["original parameters"]
    columns = [first]
    if client.logs("proxy") is None:  # against containers: their proxy is not ours to restart
        print("\n  (to see other parameters: ACTIVATE_VIRGINICA=1 THRESHOLD_SETOSA=0.99 docker compose up -d proxy)")
    else:
        settings = [parameters(client.logs("proxy"))]
        # The same rows, asked of a proxy started with other parameters: nothing rebuilt, no model retrained.
        print(f"\n  == the pattern started again with {' '.join(f'{k}={v}' for k, v in OTHER.items())} ==")
        with run_pattern(PATTERN, overrides={"proxy": OTHER}) as run:
            other = ServiceClient("proxy", run.url("proxy"), client)
            other.get("/metadata")
            columns.append(decide_each(other, DECIDED_OTHER))
            settings.append(parameters(run.logs("proxy")))
    print("\n  The same rows under each setting (p: each model's probability of its species, asked directly):")
    for number, setting in enumerate(settings, 1):
        print(f"    ({number}) {setting}")
    for index, row in enumerate(ROWS):
        probabilities = "  ".join(f"{name} {scores[name][index][1]:.4f}" for name in BACKENDS)
        print(f"\n    {row}  p: {probabilities}")
        for number, column in enumerate(columns, 1):
            print(f"      ({number}) {column[index]}")
