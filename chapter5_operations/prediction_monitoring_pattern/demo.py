"""A few stored predictions (the book's outlier among them), then the monitor's alerts appearing as the load job's
stream reaches its first drift window (block 2: every feature 10 % up; about 30 s after the load job starts)."""

import time

from mlpatterns.demo import DemoClient

SETOSA = [5.1, 3.5, 1.4, 0.2]
ODD = [1.0, 2.0, 3.0, 4.0]  # the book's outlier: stored with is_outlier true
WAIT_SECONDS = 120  # for the first alerts: the load job sends block 2 from ~20 s, the monitor checks every 10 s
STORED = 'prediction_records_total{state="stored"}'


def demo(client: DemoClient) -> None:
    api = client.service("api")
    api.get("/health")
    api.post("/predict", {"data": [SETOSA]})
    api.post("/predict/label", {"data": [SETOSA, ODD]}, answer={"is_outlier": [False, True]})
    api.post("/predict", {"data": [[5.1, 3.5, 1.4]]}, expect=422)  # refused: not stored
    time.sleep(1)  # the records are written after the answers, by each worker's writer thread
    print("\n  Stored so far (the load job is sending too):", int(api.metric(STORED)), "requests")
    print(f"\n  Waiting up to {WAIT_SECONDS} s for the monitor's first alerts (drift planted in blocks 2, 5, 7)...")
    deadline = time.monotonic() + WAIT_SECONDS
    while not client.http.get(api.base_url + "/alerts").json():
        if time.monotonic() > deadline:
            print("  no alert yet: see the monitor's log")
            break
        time.sleep(2)
    else:
        print("  Stored by now:", int(api.metric(STORED)), "requests")
        api.get("/alerts?limit=5")
    monitor = client.logs("monitor")
    if monitor is not None:
        print("\n  The monitor's last lines (an alert is an ERROR line):")
        for line in monitor.splitlines()[-8:]:
            print("  " + line)
    metrics = client.http.get(api.base_url + "/metrics").text
    print("\n  On the API's /metrics:")
    for line in metrics.splitlines():
        if line.startswith("prediction_monitor_alerts_total{"):
            print("  " + line)
