"""The batch pattern at work: the seeded rows wait unpredicted, then the jobs' pending count falls to zero live."""

import time

from mlpatterns.demo import DemoClient

DEADLINE_SECONDS = 120  # the jobs start 5 s after the seeding (START_DELAY_SECONDS) and take about a second


def _show(counts: dict) -> None:
    pending, done = counts["unpredicted"], counts["predicted"]
    print(f"     {time.strftime('%H:%M:%S')}  unpredicted {pending:>6,}  predicted {done:>6,}")


def demo(client: DemoClient) -> None:
    api = client.service("api")
    api.get("/health")
    counts = api.get("/data/count").json()
    api.get("/data/unpredicted?limit=2")  # before the jobs' start delay is over: every row waits
    api.get("/data/predicted?limit=2")
    print("\n  the pending count, as the three jobs predict the table (polled every 0.1 s):")
    shown, deadline = None, time.monotonic() + DEADLINE_SECONDS
    while counts["unpredicted"] and time.monotonic() < deadline:
        if counts["unpredicted"] != shown:
            shown = counts["unpredicted"]
            _show(counts)
        time.sleep(0.1)
        counts = client.http.get(api.base_url + "/data/count").json()
    _show(counts)
    api.get("/data/count")
    api.get("/data/predicted?limit=2")  # probabilities, label, the run that predicted each row
    api.get("/data/all?limit=2&after_id=150")  # the next page: the first jittered copies of the flowers
    api.get("/runs?limit=3")  # three copies of the job shared the rows: each row in exactly one run
    # Paging out of bounds is a 422 that says which parameter.
    api.get("/data/all?limit=0", expect=422)
    api.get("/data/all?after_id=-1", expect=422)
