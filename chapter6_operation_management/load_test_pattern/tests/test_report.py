"""The report and its gate on statistics with known numbers, in the files locust writes (its header lines as
locust 2.47 writes them); the end-to-end test reads the files of real runs."""

import csv

import pytest

from chapter6_operation_management.load_test_pattern import report as report_module
from chapter6_operation_management.load_test_pattern.report import (
    GateSettings,
    ReportError,
    format_report,
    gate,
    read_report,
    verdict,
)

STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)
FAILURES_HEADER = "Method,Name,Error,Occurrences,First Seen,Last Seen"


def write_run(tmp_path, requests=2000, failures=0, p99="4", errors=(), codes="200:2000"):
    """A run's CSV files under tmp_path/load; returns the prefix."""
    row = f"{requests},{failures},2,2.05,1.21,15.31,79.0,100.0,{failures / 20},2,2,2,3,3,3,4,{p99},9,15,15,15"
    (tmp_path / "load_stats.csv").write_text(f"{STATS_HEADER}\nPOST,/predict,{row}\n,Aggregated,{row}\n")
    with open(tmp_path / "load_failures.csv", "w", newline="") as file:  # quoted as locust quotes them
        writer = csv.writer(file)
        writer.writerow(FAILURES_HEADER.split(","))
        seen = ["2026-12-01T05:00:00Z", "2026-12-01T05:00:20Z"]
        writer.writerows(["POST", "/predict", error, count, *seen] for error, count in errors)
    if codes is not None:
        pairs = [pair.split(":") for pair in codes.split()]
        (tmp_path / "load_status_codes.csv").write_text("Status Code,Count\n" + "".join(f"{c},{n}\n" for c, n in pairs))
    return tmp_path / "load"


def test_the_vegeta_fields_from_locust_s_csv(tmp_path):
    report = read_report(write_run(tmp_path))
    assert format_report(report).splitlines() == [
        "Requests      [total, rate, throughput]         2000, 100.00, 100.00",
        "Duration      [total]                           20.00s",
        "Latencies     [min, mean, 50, 90, 95, 99, max]  1.21ms, 2.05ms, 2ms, 3ms, 3ms, 4ms, 15.31ms",
        "Bytes In      [total, mean]                     158000, 79.00",
        "Success       [ratio]                           100.00%",
        "Status Codes  [code:count]                      200:2000",
        "Error Set:",
    ]
    assert verdict(report, GateSettings()) == (True, "Gate          [error rate <= 1.00%, p99 <= 100 ms]  PASS")


def test_failures_lower_the_throughput_and_fill_the_error_set(tmp_path):
    errors = [("CatchResponseError('HTTP 500')", 30), ("ConnectionResetError(104, 'reset')", 10)]
    report = read_report(write_run(tmp_path, failures=40, errors=errors, codes="0:10 200:1960 500:30"))
    text = format_report(report)
    assert "Requests      [total, rate, throughput]         2000, 100.00, 98.00" in text
    assert "Success       [ratio]                           98.00%" in text
    assert "Status Codes  [code:count]                      0:10  200:1960  500:30" in text
    assert text.endswith("Error Set:\nCatchResponseError('HTTP 500') (30)\nConnectionResetError(104, 'reset') (10)")


@pytest.mark.parametrize(
    "failures, p99, settings, reasons",
    [
        (20, "100", GateSettings(), []),  # exactly at both limits: passes
        (21, "4", GateSettings(), ["error rate 1.05% is above 1.00%"]),
        (0, "110", GateSettings(), ["p99 110 ms is above 100 ms"]),
        (30, "250", GateSettings(), ["error rate 1.50% is above 1.00%", "p99 250 ms is above 100 ms"]),
        (1, "4", GateSettings(max_error_rate=0), ["error rate 0.05% is above 0.00%"]),
        (30, "250", GateSettings(max_error_rate=0.05, max_p99_ms=300), []),
    ],
)
def test_the_gate(tmp_path, failures, p99, settings, reasons):
    assert gate(read_report(write_run(tmp_path, failures=failures, p99=p99)), settings) == reasons


def test_a_run_that_sent_nothing_fails(tmp_path):
    row = "0,0,0,0.0,0.0,0.0,0.0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A"
    (tmp_path / "load_stats.csv").write_text(f"{STATS_HEADER}\n,Aggregated,{row}\n")
    (tmp_path / "load_failures.csv").write_text(FAILURES_HEADER + "\r\n")
    report = read_report(tmp_path / "load")
    assert "Latencies     [min, mean, 50, 90, 95, 99, max]  none (no request was sent)" in format_report(report)
    assert verdict(report, GateSettings()) == (
        False,
        "Gate          [error rate <= 1.00%, p99 <= 100 ms]  FAIL: no request was sent",
    )


def test_status_codes_are_optional(tmp_path):
    report = read_report(write_run(tmp_path, codes=None))
    assert report.status_codes is None
    assert "Status Codes  [code:count]                      not recorded" in format_report(report)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("load_stats.csv", "load_stats.csv: no such file (was locust run with --csv"),
        ("load_failures.csv", "load_failures.csv: no such file"),
        ("aggregated", "load_stats.csv: no Aggregated row (is it a locust stats file?)"),
        ("count", "load_*.csv: unexpected content (ValueError("),
    ],
)
def test_unreadable_statistics_are_a_clear_error(tmp_path, damage, message):
    prefix = write_run(tmp_path)
    stats = tmp_path / "load_stats.csv"
    if damage.endswith(".csv"):
        (tmp_path / damage).unlink()
    elif damage == "aggregated":
        stats.write_text(stats.read_text().replace("Aggregated", "Total"))
    else:
        stats.write_text(stats.read_text().replace(",Aggregated,2000,", ",Aggregated,lots,"))
    with pytest.raises(ReportError) as raised:
        read_report(prefix)
    assert message in str(raised.value)


def test_the_command_prints_the_report_and_exits_by_the_gate(tmp_path, capsys):
    prefix = str(write_run(tmp_path, p99="120"))
    assert report_module.main([prefix]) == 1
    assert capsys.readouterr().out.endswith("FAIL: p99 120 ms is above 100 ms\n")
    assert report_module.main([prefix, "--max-p99-ms", "150"]) == 0
    assert capsys.readouterr().out.endswith("Gate          [error rate <= 1.00%, p99 <= 150 ms]  PASS\n")
    assert report_module.main([str(tmp_path / "other")]) == 2
    assert "other_stats.csv: no such file" in capsys.readouterr().err
    assert report_module.main([prefix, "--max-error-rate", "2"]) == 2
    assert "MAX_ERROR_RATE / --max-error-rate: Input should be less than or equal to 1 (got '2')" in (
        capsys.readouterr().err
    )
