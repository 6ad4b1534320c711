"""`python -m chapter6_operation_management.load_test_pattern.report build/load_test/load`: a locust run's CSV
statistics as vegeta's text report, and the gate: pass or fail on the error rate and the 99th percentile.

    Requests      [total, rate, throughput]         2000, 100.41, 100.41
    Duration      [total]                           19.92s
    Latencies     [min, mean, 50, 90, 95, 99, max]  1.87ms, 10.95ms, 10ms, 19ms, 22ms, 27ms, 57.02ms
    Bytes In      [total, mean]                     158000, 79.00
    Success       [ratio]                           100.00%
    Status Codes  [code:count]                      200:2000
    Error Set:
    Gate          [error rate <= 1.00%, p99 <= 100 ms]  PASS

It reads what locust wrote with `--csv PREFIX`: PREFIX_stats.csv (the "Aggregated" row: counts, rate, response
times), PREFIX_failures.csv (the error set) and PREFIX_status_codes.csv (written by this pattern's locustfile).
Rate is requests per second over the run; throughput counts successful requests only. Locust keeps response
times to the millisecond below 100 ms (to 10 ms below 1 s), so the percentiles are whole milliseconds; min, mean
and max are exact. Exit status: 0 the gate passes, 1 it fails, 2 the statistics cannot be read.
"""

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, CliApp, CliPositionalArg, SettingsConfigDict, SettingsError

PROG = "python -m chapter6_operation_management.load_test_pattern.report"
PERCENTILES = ("50%", "90%", "95%", "99%")


class ReportError(ValueError):
    """The statistics of a run cannot be read; the message says which file and why."""


class GateSettings(BaseSettings):
    """The gate: a run passes when it sent requests, no more of them failed than MAX_ERROR_RATE and its 99th
    percentile is at most MAX_P99_MS."""

    model_config = SettingsConfigDict(extra="ignore", cli_kebab_case=True, cli_exit_on_error=False, frozen=True)

    max_error_rate: float = Field(0.01, ge=0, le=1, description="Largest share of failed requests that passes.")
    max_p99_ms: float = Field(100.0, gt=0, description="Largest 99th percentile latency that passes, in ms.")


@dataclass(frozen=True)
class Report:
    requests: int
    failures: int
    rate: float  # requests per second over the run
    latencies_ms: dict[str, float]  # min, mean, 50%, 90%, 95%, 99%, max; empty when nothing was sent
    bytes_in_mean: float
    status_codes: dict[int, int] | None  # None: the run's scenario did not record them
    errors: list[tuple[str, int]] = field(default_factory=list)  # (error, occurrences)

    @property
    def duration(self) -> float:
        return self.requests / self.rate if self.rate else 0.0

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.failures) / self.duration if self.duration else 0.0


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as file:
            return list(csv.DictReader(file))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file (was locust run with --csv {str(path).rsplit('_', 1)[0]}?)") from None


def read_report(prefix: str | Path) -> Report:
    """The run's report from the CSV files locust wrote with `--csv prefix`."""
    stats_file = Path(f"{prefix}_stats.csv")
    total = next((row for row in _rows(stats_file) if row.get("Name") == "Aggregated"), None)
    if total is None:
        raise ReportError(f"{stats_file}: no Aggregated row (is it a locust stats file?)")
    try:
        requests = int(total["Request Count"])
        latencies = {}
        if requests:
            latencies = {"min": float(total["Min Response Time"]), "mean": float(total["Average Response Time"])}
            latencies |= {name: float(total[name]) for name in PERCENTILES}
            latencies["max"] = float(total["Max Response Time"])
        failures_file = Path(f"{prefix}_failures.csv")
        errors = [(row["Error"], int(row["Occurrences"])) for row in _rows(failures_file)]
        codes_file, status_codes = Path(f"{prefix}_status_codes.csv"), None
        if codes_file.exists():
            status_codes = {int(row["Status Code"]): int(row["Count"]) for row in _rows(codes_file)}
        return Report(
            requests=requests,
            failures=int(total["Failure Count"]),
            rate=float(total["Requests/s"]),
            latencies_ms=latencies,
            bytes_in_mean=float(total["Average Content Size"]),
            status_codes=status_codes,
            errors=sorted(errors, key=lambda error: -error[1]),
        )
    except (KeyError, ValueError) as error:
        raise ReportError(f"{prefix}_*.csv: unexpected content ({error!r})") from None


def _ms(value: float) -> str:
    return f"{value:.0f}ms" if value == int(value) else f"{value:.2f}ms"


def _line(name: str, fields: str, values: str) -> str:
    return f"{name:<14}{fields:<34}{values}"


def format_report(report: Report) -> str:
    """vegeta's text report (`vegeta report -type=text`), from the fields locust records."""
    requests = f"{report.requests}, {report.rate:.2f}, {report.throughput:.2f}"
    latencies = ", ".join(_ms(value) for value in report.latencies_ms.values()) or "none (no request was sent)"
    codes = report.status_codes
    codes_text = "not recorded" if codes is None else "  ".join(f"{code}:{count}" for code, count in codes.items())
    lines = [
        _line("Requests", "[total, rate, throughput]", requests),
        _line("Duration", "[total]", f"{report.duration:.2f}s"),
        _line("Latencies", "[min, mean, 50, 90, 95, 99, max]", latencies),
        _line("Bytes In", "[total, mean]", f"{report.bytes_in_mean * report.requests:.0f}, {report.bytes_in_mean:.2f}"),
        _line("Success", "[ratio]", f"{100 * (1 - report.error_rate) if report.requests else 0:.2f}%"),
        _line("Status Codes", "[code:count]", codes_text),
        "Error Set:",
        *(f"{error} ({count})" for error, count in report.errors),
    ]
    return "\n".join(lines)


def gate(report: Report, settings: GateSettings) -> list[str]:
    """Why the run fails the gate; an empty list: it passes."""
    if not report.requests:
        return ["no request was sent"]
    reasons = []
    if report.error_rate > settings.max_error_rate:
        reasons.append(f"error rate {report.error_rate:.2%} is above {settings.max_error_rate:.2%}")
    if report.latencies_ms["99%"] > settings.max_p99_ms:
        reasons.append(f"p99 {report.latencies_ms['99%']:g} ms is above {settings.max_p99_ms:g} ms")
    return reasons


def verdict(report: Report, settings: GateSettings) -> tuple[bool, str]:
    """(passed, the gate's line for the report)."""
    reasons = gate(report, settings)
    limits = f"[error rate <= {settings.max_error_rate:.2%}, p99 <= {settings.max_p99_ms:g} ms]"
    line = f"{'Gate':<14}{limits}  " + ("FAIL: " + "; ".join(reasons) if reasons else "PASS")
    return not reasons, line


def settings_error(error: ValidationError | SettingsError) -> str:
    """One line per wrong setting, naming its environment variable and command-line option."""
    if isinstance(error, SettingsError):
        return str(error)
    lines = []
    for problem in error.errors():
        name = str(problem["loc"][0]) if problem["loc"] else "?"
        shown = f" (got {problem['input']!r})" if "input" in problem else ""
        lines.append(f"{name.upper()} / --{name.replace('_', '-')}: {problem['msg']}{shown}")
    return "\n".join(lines)


class ReportCommand(GateSettings):
    """Print a locust run's CSV statistics as vegeta's text report and apply the gate."""

    model_config = SettingsConfigDict(cli_prog_name=PROG)

    prefix: CliPositionalArg[Path] = Field(description="The --csv prefix of the run, e.g. build/load_test/load")


def main(argv: list[str] | None = None) -> int:
    try:
        command = CliApp.run(ReportCommand, cli_args=sys.argv[1:] if argv is None else argv)
        report = read_report(command.prefix)
    except (ValidationError, SettingsError) as error:
        print(f"report: {settings_error(error)}", file=sys.stderr)
        return 2
    except ReportError as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    passed, line = verdict(report, command)
    print(format_report(report) + "\n" + line)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
