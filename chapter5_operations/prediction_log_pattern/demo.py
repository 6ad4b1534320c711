"""A few predictions (the book's outlier among them), then the records as the shipper read them from the log."""

import json
import time

from mlpatterns.demo import DemoClient

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.3, 3.3, 6.0, 2.5]
ODD = [1.0, 2.0, 3.0, 4.0]  # the book's outlier: score about -2.94


def demo(client: DemoClient) -> None:
    api = client.service("api")
    api.get("/health")
    api.get("/metadata")
    answers = [
        api.get("/predict/test"),
        api.post("/predict", {"data": [SETOSA]}),
        api.post("/predict", {"data": [ODD]}),
        # Every row of a batch is answered: prediction, is_outlier and outlier_score are lists, one entry per row.
        api.post("/predict/label", {"data": [SETOSA, VIRGINICA, ODD]}, answer={"is_outlier": [False, False, True]}),
    ]
    # Refused input is a clear 4xx and writes no record.
    api.post("/predict", {"data": [[5.1, 3.5, 1.4]]}, expect=422)
    api.post("/predict", {"data": []}, expect=422)
    ids = [answer.json()["job_id"] for answer in answers]
    print("\n  The shipper's output: one record per answered request, matched by job_id = request_id")
    records = shipped(client, ids)
    if records is None:
        print("  (not at hand here: `docker compose logs shipper` shows them)")
        return
    for record in records:
        flags = ", ".join(f"{o} ({s:.2f})" for o, s in zip(record["is_outlier"], record["outlier_score"], strict=True))
        print(
            f"  {record['time']} {record['request_id'][:8]}.. {record['endpoint']:<15} {record['model']}"
            f"@{record['model_version']} input {json.dumps(record['input'])} -> {record['label']}, "
            f"is_outlier (score): {flags}, {record['latency_ms']:.2f} ms"
        )
    outliers = [record for record in records if any(record["is_outlier"])]
    if outliers:
        print(f"  an outlier's record, whole:\n  {json.dumps(outliers[0])}")
    missing = set(ids) - {record["request_id"] for record in records}
    print(f"  {len(records)} records shipped" + (f"; MISSING: {sorted(missing)}" if missing else ", none missing"))


def shipped(client: DemoClient, ids: list[str], timeout: float = 10.0) -> list[dict] | None:
    """The records the shipper printed for these request ids, once all have arrived (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        output = client.logs("shipper")
        if output is None:
            return None
        records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        records = [record for record in records if record.get("request_id") in ids]
        if len(records) >= len(ids) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)
