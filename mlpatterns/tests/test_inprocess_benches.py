"""The in-process benches at their smallest (`python -m mlpatterns.bench.inprocess`, `python -m mlpatterns.bench.v2`):
each runs and prints a figure for every app and size. Run as commands: inprocess sets the metrics' multi-process
mode before prometheus_client is imported, which this test process did long ago."""

import re
import subprocess
import sys

from mlpatterns.runner.run import REPO_ROOT


def run(*command: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_the_inprocess_bench_measures_each_app_and_batch_size():
    table = run("mlpatterns.bench.inprocess", "--requests", "100", "--rounds", "1", "--rows", "1", "10")
    assert re.search(r"^\| FastAPI JSON echo \| [\d,.]+ \| 1\.00 \(echo\) \|$", table, re.M), table
    for rows in (1, 10):
        assert re.search(rf"^\| bare server, {rows} rows \| [\d,.]+ \| \|$", table, re.M), table
        assert re.search(rf"^\| /predict, {rows} rows \| [\d,.]+ \| .*[\d.]+ \(bare\) \|$", table, re.M), table


def test_the_v2_bench_compares_each_route_for_each_batch_size():
    table = run("mlpatterns.bench.v2", "--seconds", "0.1", "--rounds", "1")
    for rows in (1, 1000):
        assert re.search(rf"^\s+{rows}(\s+[\d.]+){{5}}$", table, re.M), table
