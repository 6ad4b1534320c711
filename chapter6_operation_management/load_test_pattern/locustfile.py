"""The load test's scenario, run by locust in a process of its own (`loadtest.py` starts it; gevent patches the
standard library of whatever imports locust, so nothing else of the project imports this file).

Each simulated user POSTs the book's request body to /predict, paced so that all users together send `--rate`
requests per second (0: each user sends its next request as soon as the last is answered). An answer counts as
a success only if it is a 200 holding one row of probabilities per row sent; anything else is a failure, with
its status as the reason.

Beside locust's CSV and HTML reports the scenario writes `<csv prefix>_status_codes.csv` (status code, count;
0 for a request that got no answer at all, as vegeta counts it), prints one progress line every few seconds
in place of locust's periodic tables, and lets locust's CSV writer take its last snapshot after the users have
stopped, so the CSV holds every request (locust alone writes it up to a second early and misses the last ones).
"""

import csv
import json
import logging
from collections import Counter

import gevent
from locust import FastHttpUser, constant_throughput, events, task
from locust.stats import CSV_STATS_INTERVAL_SEC

BODY = {"data": [[1.0, 2.0, 3.0, 4.0]]}  # the original's data.json
CLASSES = 3  # iris: one probability per species
PROGRESS_SECONDS = 5

status_codes: Counter[int] = Counter()
this_run: dict = {}  # the locust Environment, kept at init: the quit event passes only the exit code


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="Requests per second of all users together (0: each user as fast as it is answered)",
    )


@events.init.add_listener
def on_init(environment, **_) -> None:
    this_run["environment"] = environment
    # locust schedules its --run-time stop on the gevent loop's clock, last read when gevent started: without a
    # fresh reading, a run stops as much too early as locust took to start (1 to 2 s on these machines).
    gevent.get_hub().loop.update_now()
    # The progress line below and the report after the run replace locust's periodic and final tables.
    logging.getLogger("locust.stats_logger").setLevel(logging.WARNING)


@events.request.add_listener
def count_status(response, **_) -> None:
    status_codes[getattr(response, "status_code", None) or 0] += 1


@events.test_start.add_listener
def start_progress(environment, **_) -> None:
    gevent.spawn(print_progress, environment)


def print_progress(environment) -> None:
    run_time, total = environment.parsed_options.run_time, environment.stats.total
    elapsed = 0
    while True:
        gevent.sleep(PROGRESS_SECONDS)
        elapsed += PROGRESS_SECONDS
        p50 = total.get_current_response_time_percentile(0.5) or 0
        p99 = total.get_current_response_time_percentile(0.99) or 0
        print(
            f"progress {elapsed:>4} s of {run_time} s: {environment.runner.user_count} users, "
            f"{total.num_requests:,} requests, {total.num_failures:,} failed, {total.current_rps:.1f} req/s, "
            f"p50 {p50:g} ms, p99 {p99:g} ms over the last 10 s",
            flush=True,
        )


@events.quit.add_listener
def write_final_files(**_) -> None:
    prefix = this_run["environment"].parsed_options.csv_prefix
    if not prefix:
        return
    gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.1)  # locust's CSV writer takes a snapshot of the final stats
    with open(f"{prefix}_status_codes.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["Status Code", "Count"])
        writer.writerows(sorted(status_codes.items()))


class IrisClient(FastHttpUser):
    """One user of the iris API."""

    # A request unanswered after 10 s is a failure (loadtest.py waits as long for those in flight at the end).
    network_timeout = connection_timeout = 10.0

    def wait_time(self) -> float:
        options = self.environment.parsed_options
        if not options.rate:
            return 0.0
        return constant_throughput(options.rate / options.num_users)(self)

    @task
    def predict(self) -> None:
        with self.client.post("/predict", json=BODY, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}" if response.status_code else str(response.error))
            elif not answers_every_row(response.text):
                response.failure(f"not {CLASSES} probabilities for each row sent: {response.text[:100]}")


def answers_every_row(text: str) -> bool:
    try:
        prediction = json.loads(text)["prediction"]
    except (ValueError, KeyError, TypeError):
        return False
    rows = len(BODY["data"])
    return (
        isinstance(prediction, list)
        and len(prediction) == rows
        and all(isinstance(row, list) and len(row) == CLASSES for row in prediction)
    )
