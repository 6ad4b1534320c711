"""`python -m chapter5_operations.prediction_monitoring_pattern.monitor [--once] [--at TIME]`: the monitor.

Every INTERVAL_SECONDS it reads the records answered in the last WINDOW_SECONDS (a sliding window: 120 s every
60 s by default, as the original's 2-minute window every minute) and compares them with the training reference
(reference.json) by mlpatterns.drift: each feature's mean (the original's 5 % check) and PSI, and the outlier
share. Each alert is an ERROR log line, a row in the alerts table (GET /alerts on the API) and so a count in
prediction_monitor_alerts_total on the API's /metrics. Every check also logs one INFO line of what it saw.

--once: one check, then exit (a Kubernetes CronJob's run; exit 0 with or without alerts, 1 if the database
failed). --at TIME (ISO 8601): check the window ending then instead of now: the clock, injected from outside.
SIGTERM or SIGINT ends the wait between checks.
"""

import argparse
import json
import logging
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from chapter5_operations.prediction_monitoring_pattern.settings import MonitorSettings
from chapter5_operations.prediction_monitoring_pattern.store import save_alerts, window_source
from mlpatterns.drift import Monitor, Reference, WindowSummary
from mlpatterns.logging import configure_logging

logger = logging.getLogger(__name__)
HEARTBEAT_EVERY = 10.0  # seconds; the healthcheck's HEARTBEAT_MAX_AGE_SECONDS must be longer


def check_and_alert(monitor: Monitor, engine, now: float | None = None) -> WindowSummary:
    """One check: the window's summary logged, each alert logged as an ERROR and stored."""
    summary = monitor.check(now)
    logger.info(
        "window of %d rows: %s",
        summary.rows,
        json.dumps(
            {
                "means": {k: round(v, 4) for k, v in summary.means.items()},
                "psi": {k: round(v, 4) for k, v in summary.psi.items()},
                "outlier_rate": None if summary.outlier_rate is None else round(summary.outlier_rate, 4),
            }
        ),
    )
    for alert in summary.alerts:
        logger.error(alert.message())
    save_alerts(engine, summary.alerts)
    return summary


def _wait(stop: threading.Event, seconds: float, heartbeat: Path | None) -> bool:
    """Wait for the next check, touching the heartbeat at least every HEARTBEAT_EVERY seconds; True on a stop."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if heartbeat is not None:
            heartbeat.touch()
        if stop.wait(min(left, HEARTBEAT_EVERY)):
            return True
    return stop.is_set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="check once and exit (a CronJob's run)")
    parser.add_argument("--at", type=datetime.fromisoformat, help="check the window ending at this time")
    args = parser.parse_args(argv)
    settings = MonitorSettings()
    configure_logging(settings.log_level, settings.log_json)
    engine = settings.engine(pool_size=1)
    monitor = Monitor(
        window_source(engine),
        Reference.load(settings.reference_path),
        settings.thresholds(),
        settings.window_seconds,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    at = args.at.timestamp() if args.at else None
    logger.info(
        "monitoring the last %g s every %g s against %s",
        settings.window_seconds,
        settings.interval_seconds,
        settings.reference_path.name,
    )
    try:
        while True:
            try:
                check_and_alert(monitor, engine, at)
            except SQLAlchemyError as error:
                logger.error("check failed: %s", str(error).splitlines()[0])
                if args.once:
                    return 1
            if args.once or _wait(stop, settings.interval_seconds, settings.heartbeat_path):
                return 0
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
