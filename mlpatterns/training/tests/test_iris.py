"""The parameterised iris trainer: deterministic, exported faithfully, rebuilt only when something changed."""

import json

import pytest

from mlpatterns.training import iris


def test_trains_deterministically_and_skips_up_to_date_models(tmp_path, caplog):
    first = iris.build("svc", out=tmp_path / "a")
    second = iris.build("svc", out=tmp_path / "b")
    assert json.loads(first.metrics.read_text()) == json.loads(second.metrics.read_text())
    stamp = first.model.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        iris.build("svc", out=tmp_path / "a")
    assert "iris_svc: up to date" in caplog.text
    assert first.model.stat().st_mtime_ns == stamp
    iris.build("svc", out=tmp_path / "a", seed=1)  # another parameter: retrained
    assert first.model.stat().st_mtime_ns != stamp


def test_a_half_written_model_is_rebuilt(tmp_path):
    artifacts = iris.build("rf", out=tmp_path)
    artifacts.metrics.unlink()
    assert artifacts.recorded_fingerprint() is None
    iris.build("rf", out=tmp_path)
    assert artifacts.recorded_fingerprint() is not None


def test_binary_needs_a_target(tmp_path):
    with pytest.raises(ValueError, match="binary needs --target"):
        iris.build("binary", out=tmp_path)


def test_command_line_rejects_a_bad_kind(capsys):
    with pytest.raises(SystemExit) as exit_info:
        iris.main(["knn"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'knn'" in capsys.readouterr().err
