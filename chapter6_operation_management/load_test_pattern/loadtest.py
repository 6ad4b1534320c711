"""`python -m chapter6_operation_management.load_test_pattern.loadtest`: the load job. It waits for the API's
/health, runs the scenario (locustfile.py) headless in a locust process of its own, then prints vegeta's text
report from locust's CSV statistics and the gate's verdict.

Every setting is an environment variable (compose, the Kubernetes Job) or the option of the same name
(`--users 50 --run-time 30s`); `--help` lists them with their defaults. The reports go to REPORT_DIR:
load_stats.csv, load_failures.csv, load_status_codes.csv (and locust's other CSV files) and load.html.
Exit status: 0 the gate passes, 1 it fails, 2 the run could not be made (a wrong setting, an API that never
became healthy, locust failing).
"""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydantic import Field, HttpUrl, ValidationError, field_validator
from pydantic_settings import CliApp, SettingsConfigDict, SettingsError

from chapter6_operation_management.load_test_pattern.report import (
    GateSettings,
    ReportError,
    format_report,
    read_report,
    settings_error,
    verdict,
)
from mlpatterns.healthcheck import healthy

PROG = "python -m chapter6_operation_management.load_test_pattern.loadtest"
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
STOP_SECONDS = 10  # the scenario's request timeout (IrisClient.network_timeout)
RUN_TIME = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")  # locust's, as 90s, 1m30s, 1h; or seconds alone: 90


class LoadTestSettings(GateSettings):
    """Run the load test against the iris API and apply the gate to its report."""

    model_config = SettingsConfigDict(cli_prog_name=PROG)

    target_url: HttpUrl = Field(HttpUrl("http://127.0.0.1:8000"), description="The API under test (its base URL).")
    users: int = Field(10, gt=0, le=10_000, description="Simulated users, each on its own connection.")
    spawn_rate: float = Field(10.0, gt=0, description="Users started per second until all run.")
    run_time: str = Field("20s", description="How long the load runs: 90, 90s, 1m30s, 1h.")
    rate: float = Field(
        100.0, ge=0, description="Requests per second of all users together; 0: each user as fast as answered."
    )
    report_dir: Path = Field(Path("build/load_test"), description="Where the CSV and HTML reports are written.")
    wait_seconds: float = Field(
        60.0, ge=0, description="How long to wait for the API's /health before the load starts; 0: do not wait."
    )

    @field_validator("run_time")
    @classmethod
    def _a_time_span(cls, value: str) -> str:
        value = value.strip()
        match = RUN_TIME.fullmatch(value + "s" if value.isdigit() else value)
        if not match or not any(match.groups()):
            raise ValueError("expected a time span such as 90, 90s, 1m30s or 1h")
        hours, minutes, seconds = (int(part or 0) for part in match.groups())
        if not hours * 3600 + minutes * 60 + seconds:
            raise ValueError("the run must last at least a second (locust runs a zero time span for ever)")
        return value

    @property
    def host(self) -> str:
        return str(self.target_url).rstrip("/")


def wait_until_healthy(host: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not healthy(f"{host}/health"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def locust_command(settings: LoadTestSettings, prefix: Path) -> list[str]:
    return [
        sys.executable, "-m", "locust", "--locustfile", str(LOCUSTFILE), "--headless",
        "--host", settings.host, "--users", str(settings.users), "--spawn-rate", str(settings.spawn_rate),
        "--run-time", settings.run_time, "--rate", str(settings.rate),
        "--csv", str(prefix), "--html", f"{prefix}.html",
        "--exit-code-on-error", "0",  # failed requests are the gate's to judge; a non-zero exit: locust failed
        # At the end the requests in flight are answered (or time out) before the users stop, so every request
        # sent is counted: the scenario's requests time out after as long.
        "--stop-timeout", str(STOP_SECONDS),
    ]  # fmt: skip


def run_locust(command: list[str]) -> int:
    """Run locust to its end; SIGTERM (a stopped Job or container) is passed on, so it writes its reports."""
    process = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:  # Ctrl-C reached locust too (one process group): wait for its reports
            continue


OUTCOMES = {0: "the gate passed", 1: "the gate failed", 2: "no load test was made"}


def run(settings: LoadTestSettings) -> int:
    if settings.wait_seconds:
        print(f"loadtest: waiting up to {settings.wait_seconds:g} s for {settings.host}/health", flush=True)
        if not wait_until_healthy(settings.host, settings.wait_seconds):
            print(f"loadtest: {settings.host}/health did not answer within {settings.wait_seconds:g} s", flush=True)
            return 2
    rate = f"{settings.rate:g} requests/s" if settings.rate else "as fast as answered"
    print(
        f"loadtest: {settings.users} users (started {settings.spawn_rate:g}/s), {rate}, for {settings.run_time}, "
        f"against {settings.host}/predict",
        flush=True,
    )
    prefix = settings.report_dir / "load"
    code = run_locust(locust_command(settings, prefix))
    if code != 0:
        print(f"loadtest: locust exited with code {code} (its output is above)", flush=True)
        return 2
    try:
        report = read_report(prefix)
    except ReportError as error:
        print(f"loadtest: {error}", flush=True)
        return 2
    passed, line = verdict(report, settings)
    print(f"\n{format_report(report)}\n{line}\n\nreports: {prefix}_stats.csv, {prefix}.html", flush=True)
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    try:
        settings = CliApp.run(LoadTestSettings, cli_args=sys.argv[1:] if argv is None else argv)
    except (ValidationError, SettingsError) as error:
        print(f"loadtest: {settings_error(error)}", file=sys.stderr)
        return 2
    code = run(settings)
    print(f"loadtest: exit {code} ({OUTCOMES[code]})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
