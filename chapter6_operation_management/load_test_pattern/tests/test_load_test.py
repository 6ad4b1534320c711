"""End to end: the iris API started by the local runner, and the load job run against it as compose defines it
(for 3 s instead of 20), then against targets that fail. locust runs in processes of its own, never in pytest.

These are no timing tests: the runs that must pass allow a p99 of 10 s (a shared machine's latencies move
tenfold), and the gate's p99 rule is proven on statistics with known numbers in test_report.py."""

import subprocess
from pathlib import Path

import pytest
import yaml

from chapter6_operation_management.load_test_pattern import loadtest
from chapter6_operation_management.load_test_pattern.demo import load_job
from chapter6_operation_management.load_test_pattern.loadtest import LoadTestSettings
from chapter6_operation_management.load_test_pattern.report import read_report
from mlpatterns.runner.backing import free_port
from mlpatterns.testing import metric, start_pattern

PATTERN = Path(__file__).parents[1]
PREDICTED = 'http_requests_total{method="POST",path="/predict",'
LAX = {"RUN_TIME": "3s", "MAX_P99_MS": "10000"}


def run_job(reports: Path, **overrides: str) -> subprocess.CompletedProcess:
    command, env = load_job(REPORT_DIR=str(reports), **overrides)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_a_short_run_passes_and_counts_every_request_the_api_answered(pattern, tmp_path):
    api = pattern.client("api")
    before = metric(api, PREDICTED + 'status="200"}')
    result = run_job(tmp_path, TARGET_URL=pattern.url("api"), **LAX)
    assert result.returncode == 0, output(result)

    report = read_report(tmp_path / "load")
    assert report.requests >= 50, output(result)  # 3 s at 100 requests/s, on however busy a machine
    assert report.failures == 0 and report.errors == []
    assert report.status_codes == {200: report.requests}
    # Nothing lost: the job's count is the API's, to the request (the last ones answered are in the CSV too).
    assert metric(api, PREDICTED + 'status="200"}') - before == report.requests
    assert report.bytes_in_mean > 0

    latencies = report.latencies_ms
    assert list(latencies) == ["min", "mean", "50%", "90%", "95%", "99%", "max"]
    assert 0 < latencies["min"] <= latencies["mean"] <= latencies["max"] < 10_000
    percentiles = [latencies[p] for p in ("50%", "90%", "95%", "99%")]
    assert percentiles == sorted(percentiles) and percentiles[0] >= 0

    text = result.stdout
    assert f"Requests      [total, rate, throughput]         {report.requests}, " in text
    assert f"Status Codes  [code:count]                      200:{report.requests}" in text
    assert "Gate          [error rate <= 1.00%, p99 <= 10000 ms]  PASS" in text
    assert text.rstrip().endswith("loadtest: exit 0 (the gate passed)")
    html = (tmp_path / "load.html").read_text()
    assert "/predict" in html and "IrisClient" in html


def test_a_run_against_no_api_fails_the_gate(tmp_path):
    result = run_job(tmp_path, TARGET_URL=f"http://127.0.0.1:{free_port()}", WAIT_SECONDS="0", **LAX)
    assert result.returncode == 1, output(result)
    report = read_report(tmp_path / "load")
    assert report.requests > 0 and report.failures == report.requests
    assert report.status_codes == {0: report.requests}  # no answer at all: vegeta's code 0
    assert "Connection refused" in report.errors[0][0]
    assert "FAIL: error rate 100.00% is above 1.00%" in result.stdout
    assert result.stdout.rstrip().endswith("loadtest: exit 1 (the gate failed)")


def test_a_run_against_an_api_refusing_every_request_fails_the_gate(tmp_path):
    # The API deliberately misconfigured: a body limit below the scenario's body, so every POST is a 413.
    with start_pattern(PATTERN, overrides={"api": {"MAX_BODY_BYTES": "16"}}) as refusing:
        result = run_job(tmp_path, TARGET_URL=refusing.url("api"), **LAX)
        refused = metric(refusing.client("api"), 'http_requests_total{method="POST",path="unmatched",status="413"}')
    assert result.returncode == 1, output(result)
    report = read_report(tmp_path / "load")
    assert report.requests > 0 and report.status_codes == {413: report.requests} and refused == report.requests
    assert report.errors == [("CatchResponseError('HTTP 413')", report.requests)]
    assert "FAIL: error rate 100.00% is above 1.00%" in result.stdout


def test_a_run_against_the_wrong_model_fails_the_gate(tmp_path):
    # Every answer a 200, /health fine, but from a one-vs-rest model: two probabilities where the client needs three.
    wrong_model = {"MODEL_PATH": "models/iris_binary_setosa/model.onnx"}
    with start_pattern(PATTERN, overrides={"api": wrong_model}) as wrong:
        result = run_job(tmp_path, TARGET_URL=wrong.url("api"), **LAX)
    assert result.returncode == 1, output(result)
    report = read_report(tmp_path / "load")
    assert report.requests > 0 and report.status_codes == {200: report.requests}
    assert report.failures == report.requests
    ((error, count),) = report.errors
    assert error.startswith('CatchResponseError(\'not 3 probabilities for each row sent: {"prediction":[[0.')
    assert count == report.requests


def test_no_load_without_a_healthy_api(tmp_path, capsys):
    target = f"http://127.0.0.1:{free_port()}"
    assert loadtest.main(["--target-url", target, "--wait-seconds", "1", "--report-dir", str(tmp_path)]) == 2
    assert f"loadtest: {target}/health did not answer within 1 s" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())  # locust never started


# The job's settings are checked before anything starts, in this process (loadtest.py imports no locust).
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--users", "0"], "USERS / --users: Input should be greater than 0 (got '0')"),
        (["--users", "many"], "USERS / --users: Input should be a valid integer"),
        (["--run-time", "0s"], "RUN_TIME / --run-time: Value error, the run must last at least a second"),
        (["--run-time", "5x"], "RUN_TIME / --run-time: Value error, expected a time span such as 90, 90s, 1m30s"),
        (["--run-time", "1h30"], "RUN_TIME / --run-time: Value error, expected a time span such as 90, 90s, 1m30s"),
        (["--rate", "-1"], "RATE / --rate: Input should be greater than or equal to 0"),
        (["--spawn-rate", "0"], "SPAWN_RATE / --spawn-rate: Input should be greater than 0"),
        (["--target-url", "ftp://api:8000"], "TARGET_URL / --target-url: URL scheme should be 'http' or 'https'"),
        (["--max-error-rate", "1.5"], "MAX_ERROR_RATE / --max-error-rate: Input should be less than or equal to 1"),
        (["--max-p99-ms", "0"], "MAX_P99_MS / --max-p99-ms: Input should be greater than 0"),
        (["--userz", "5"], "unrecognized arguments: --userz 5"),
    ],
)
def test_a_wrong_setting_is_one_clear_line_and_no_run(tmp_path, capsys, argv, message):
    assert loadtest.main([*argv, "--report-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("loadtest: ") and message in error, error
    assert not any(tmp_path.iterdir())


def test_a_wrong_environment_variable_is_named_too(monkeypatch, capsys):
    monkeypatch.setenv("USERS", "ten")
    assert loadtest.main([]) == 2
    assert "USERS / --users: Input should be a valid integer, unable to parse string as an integer (got 'ten')" in (
        capsys.readouterr().err
    )


def test_the_job_s_defaults_compose_and_the_kubernetes_job_agree():
    """`make load` (the defaults) runs what `docker compose run load` runs; the Kubernetes Job the same load and
    gate, for the book's full minute, at the Service's address."""
    compose = load_job()[1]
    defaults = LoadTestSettings()
    (job,) = yaml.safe_load_all((PATTERN / "manifests" / "load-job.yml").read_text())
    container = job["spec"]["template"]["spec"]["containers"][0]
    kubernetes = {item["name"]: item["value"] for item in container["env"]}
    shared = ["USERS", "SPAWN_RATE", "RATE", "MAX_ERROR_RATE", "MAX_P99_MS"]
    assert {name: compose[name] for name in shared} == {name: kubernetes[name] for name in shared}
    assert LoadTestSettings(**{name.lower(): compose[name] for name in [*shared, "RUN_TIME"]}) == defaults
    assert (compose["RUN_TIME"], kubernetes["RUN_TIME"]) == ("20s", "60s")
    assert compose["TARGET_URL"] == "http://api:8000"
    assert kubernetes["TARGET_URL"] == "http://iris-svc.load-test.svc.cluster.local:8000"
    compose_file = yaml.safe_load((PATTERN / "docker-compose.yml").read_text())
    assert container["command"] == compose_file["services"]["load"]["command"]
    assert container["image"] == compose_file["services"]["load"]["image"]
