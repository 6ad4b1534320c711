"""Every serving pattern's bench runs at its smallest setting and writes its report: a table, its key figure beside
its floor and its target line. Benchmarks are commands (`make bench`); these tests never judge a timing.

Each bench runs through `make bench`'s driver (mlpatterns/bench/all.py --tiny --only <dir>), with the reports
written to a temporary directory (MLPATTERNS_BENCH_DIR), so a user's build/bench/ is left as it was.

Seven patterns share one bench, the generic one (mlpatterns/bench/run.py), which differs between them only by what
their compose file's `x-bench` names. It runs here on one pattern of each kind of body it sends; for every other
pattern, what its `x-bench` names is checked to be there (a wrong service or model would stop its bench).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlpatterns.bench.all import BENCHED, NOT_BENCHED
from mlpatterns.bench.run import bench_spec
from mlpatterns.bench.verdict import read_verdict
from mlpatterns.runner.compose import load_services
from mlpatterns.runner.run import REPO_ROOT
from mlpatterns.settings import ModelServingSettings

GENERIC = [pattern for pattern in BENCHED if not (REPO_ROOT / pattern / "bench.py").exists()]
# The generic bench run on one pattern of each kind of body: what the others send is one of these.
GENERIC_RUN = {
    "chapter4_serving_patterns/web_single_pattern": "rows of numbers from /metadata, with the bare floor",
    "chapter4_serving_patterns/synchronous_pattern": "a shipped digit image under TF Serving's `instances` key",
    "chapter4_serving_patterns/prep_pred_pattern": "base64 images from /metadata, decoded for the model floor",
}
RUN = [pattern for pattern in BENCHED if pattern not in GENERIC or pattern in GENERIC_RUN]


def test_every_pattern_has_a_bench_or_says_why_not():
    patterns = {str(path.parent.relative_to(REPO_ROOT)) for path in REPO_ROOT.glob("chapter*/*/docker-compose.yml")}
    assert set(BENCHED) | set(NOT_BENCHED) == patterns
    assert not set(BENCHED) & set(NOT_BENCHED)


@pytest.mark.parametrize("pattern", sorted(set(GENERIC) - set(GENERIC_RUN)), ids=lambda p: Path(p).name)
def test_what_a_generic_bench_loads_is_in_its_pattern(pattern):
    spec = bench_spec(REPO_ROOT / pattern)  # unknown keys stop it
    services = {service.name: service for service in load_services(REPO_ROOT / pattern / "docker-compose.yml")}
    name = spec.get("service", "web")
    service = services.get(name)
    assert service is not None, f"{pattern}: x-bench names the service {name!r}; the compose has {list(services)}"
    model = spec.get("model") or ModelServingSettings.model_validate(service.environment).model_path
    assert (REPO_ROOT / model).is_file(), f"{pattern}: the model floor's {model} is not there"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("pattern", RUN, ids=[Path(p).name for p in RUN])
def test_bench_runs_and_writes_its_report(pattern, tmp_path):
    env = dict(os.environ, MLPATTERNS_BENCH_DIR=str(tmp_path))
    env.pop("MAKELEVEL", None)
    command = [sys.executable, "-m", "mlpatterns.bench.all", "--tiny", "--only", pattern]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"

    name = Path(pattern).name
    report = (tmp_path / f"{name}.md").read_text()
    assert f"## Benchmark: {name}" in report
    assert "|---" in report  # its table
    verdict = read_verdict(report)
    assert verdict, f"no key figure or target line in:\n{report}"
    key_figure, target = verdict
    assert target.endswith((": met", ": NOT MET", "none set by the performance issue"))
    assert f"| {name} | {key_figure} | {target} | 0 |" in (tmp_path / "all.md").read_text()


def test_a_failing_bench_is_reported_and_the_others_still_run(monkeypatch, tmp_path, capsys):
    """The driver's own logic, on two stand-in benches: one writes a report, one exits 3 before writing any."""
    from mlpatterns.bench import all as bench_all

    writes = (
        "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text("
        "'## Benchmark: good\\n|---|\\n- key figure: 5 req/s, 50% of the floor\\n- target: at least 40%: met\\n')"
    )
    commands = {
        "chapter9/failing": [sys.executable, "-c", "import sys; sys.exit(3)"],
        "chapter9/good": [sys.executable, "-c", writes, str(tmp_path / "good.md")],
    }
    monkeypatch.setenv("MLPATTERNS_BENCH_DIR", str(tmp_path))
    monkeypatch.setattr(bench_all, "BENCHED", tuple(commands))
    monkeypatch.setattr(bench_all, "bench_command", lambda pattern, options: commands[pattern])

    assert bench_all.main(["--seconds", "1"]) == 1
    summary = (tmp_path / "all.md").read_text()
    assert "| failing | (no report) | - | 3 |" in summary
    assert "| good | 5 req/s, 50% of the floor | at least 40%: met | 0 |" in summary
    assert "1 of 2 benches ran" in summary
    assert "FAILED: chapter9/failing" in capsys.readouterr().err
