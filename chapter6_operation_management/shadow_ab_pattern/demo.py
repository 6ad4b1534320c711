"""The book's requests through the proxy, then what each model said of them, side by side from their records."""

import time

from chapter6_operation_management.shadow_ab_pattern.compare import compare, read_records, summary
from mlpatterns.demo import DemoClient

ROWS = {
    "setosa": [5.1, 3.5, 1.4, 0.2],
    "versicolor": [5.9, 3.0, 4.2, 1.5],
    "virginica": [6.3, 3.3, 6.0, 2.5],
    "odd": [1.0, 2.0, 3.0, 4.0],  # the book's unlikely flower
    "borderline": [6.3, 2.8, 5.1, 1.5],  # a virginica of the data set, on which the two models disagree
}


def demo(client: DemoClient) -> None:
    proxy = client.service("proxy")
    proxy.get("/health")
    answers = [proxy.get("/predict-test/abcd"), proxy.get("/predict-test-label/abcd")]
    for job, row in ROWS.items():
        answers.append(proxy.post(f"/predict/{job}", {"data": [row]}))
    answers.append(proxy.post("/predict-label/batch", {"data": list(ROWS.values())}))
    # Refused by A (and by B, which gets the same copy): a job id of other characters, a short row.
    proxy.post("/predict/bad%20id", {"data": [ROWS["setosa"]]}, expect=422)
    proxy.post("/predict/ok", {"data": [[5.1, 3.5, 1.4]]}, expect=422)

    ids = [answer.headers["x-request-id"] for answer in answers]
    print("\n  The client got A's answers. Each model's prediction log, paired by request id:")
    records = recorded(client, ids)
    if records is None:
        print("  (not at hand here: `docker compose logs --no-log-prefix iris-svc` and iris-rf show them)")
        return
    comparison = compare(*records)
    print(f"  {'request id':<11} {'job id':<11} {'input':<22} {'A: iris_svc':<30} B: iris_rf")
    for a, b in comparison.pairs:
        for row, features in enumerate(a["input"]):
            mark = "" if a["label"][row] == b["label"][row] else "  <- differ"
            print(
                f"  {a['request_id'][:8]}..  {a['job_id']:<11} {str(features):<22} "
                f"{_answer(a, row):<30} {_answer(b, row)}{mark}"
            )
    print("\n  " + summary(comparison).replace("\n", "\n  "))
    deadline = time.monotonic() + 10
    while proxy.metric("shadow_mirrors_in_flight") and time.monotonic() < deadline:  # the last copies' answers
        time.sleep(0.05)
    counts = {outcome: proxy.metric(f'shadow_mirror_requests_total{{outcome="{outcome}"}}') for outcome in OUTCOMES}
    print("  The proxy's copies to B: " + ", ".join(f"{count:.0f} {outcome}" for outcome, count in counts.items()))


OUTCOMES = ("mirrored", "failed", "dropped")


def _answer(record: dict, row: int) -> str:
    return f"{record['label'][row]} {max(record['prediction'][row]):.3f}"


def recorded(client: DemoClient, ids: list[str], timeout: float = 10.0) -> tuple[list[dict], list[dict]] | None:
    """A's and B's records of these requests, once both have them all (B's copies arrive a little later)."""
    deadline = time.monotonic() + timeout
    while True:
        logs = client.logs("iris-svc"), client.logs("iris-rf")
        if None in logs:
            return None
        a, b = ([r for r in read_records(log.splitlines()) if r["request_id"] in ids] for log in logs)
        if (len(a) == len(b) == len(ids)) or time.monotonic() > deadline:
            return a, b
        time.sleep(0.1)
