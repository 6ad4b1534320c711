"""The edge AI pattern: the int8 model is smaller and agrees with the float one; the edge client runs both in its
own process with no network, shows the top 3 per frame, keeps the throttle, and refuses bad input clearly.

The client runs as a subprocess under tests/no_network.py, which ends it (exit 97) on any socket use; the first
test shows that guard stopping a real connection that gets through without it. The pattern's compose file is
run once through the runner, as `make up` runs it: the quantize job, then the edge job, which must exit 0."""

import base64
import io
import itertools
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chapter4_serving_patterns.edge_ai_pattern import quantize
from chapter4_serving_patterns.edge_ai_pattern.edge import EdgeModel
from mlpatterns.images import sample_digits
from mlpatterns.runner.run import REPO_ROOT
from mlpatterns.training.images import make_splits

PATTERN = Path(__file__).parents[1]
PACKAGE = "chapter4_serving_patterns.edge_ai_pattern"
FLOAT_MODEL = REPO_ROOT / "models" / "cifar10" / "model.onnx"
GUARD = Path(__file__).with_name("no_network.py")
NETWORK_TOUCHED = 97  # the guard's exit code
MODEL_LINE = re.compile(r"^  (float|int8) +(.+?)   \((\d+\.\d+) ms\)$")
FRAME_LINE = re.compile(r"^frame +(\d+) at \+(\d+\.\d{3}) s  (.+)$")


@pytest.fixture(scope="module")
def int8(tmp_path_factory) -> Path:
    """The int8 model, made by the quantize command into a folder of this module's own."""
    out = tmp_path_factory.mktemp("edge") / "model.int8.onnx"
    made = _python("-m", f"{PACKAGE}.quantize", "--model", str(FLOAT_MODEL), "--out", str(out))
    assert made.returncode == 0, made.stderr
    return out


def _python(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def edge(int8: Path, *args: str) -> subprocess.CompletedProcess:
    """The edge client, with every network call fatal."""
    return _python(str(GUARD), f"{PACKAGE}.edge", "--int8-model", str(int8), *args)


def frames_of(output: str) -> list[dict]:
    """The client's frames: number, time, name and, per model, the (label, score) pairs it showed."""
    frames = []
    for line in output.splitlines():
        if match := FRAME_LINE.match(line):
            frames.append({"at": float(match[2]), "name": match[3], "models": {}})
        elif match := MODEL_LINE.match(line):
            pairs = re.findall(r"(\S+): (\d\.\d{3})(?:  |$)", match[2])
            frames[-1]["models"][match[1]] = [(label, float(score)) for label, score in pairs]
    return frames


# --- no network -------------------------------------------------------------------------------------------


def test_the_guard_stops_a_connection_that_gets_through_without_it():
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(5)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/health"
        unguarded = subprocess.Popen([sys.executable, "-m", "mlpatterns.healthcheck", url], cwd=REPO_ROOT)
        connection, _ = server.accept()  # the plain run reaches the server
        connection.close()
        unguarded.wait(10)
        guarded = _python(str(GUARD), "mlpatterns.healthcheck", url)
        assert guarded.returncode == NETWORK_TOUCHED
        assert "network touched: socket." in guarded.stderr
        server.settimeout(0.5)
        with pytest.raises(TimeoutError):
            server.accept()  # the guarded run never reached it


def test_the_client_runs_both_models_with_no_network(int8):
    result = edge(int8, "--frames", "4", "--throttle-ms", "0")
    assert result.returncode == 0, result.stderr
    assert "network touched" not in result.stderr
    frames = frames_of(result.stdout)
    assert len(frames) == 4
    assert all(set(frame["models"]) == {"float", "int8"} for frame in frames)


# --- the int8 model ---------------------------------------------------------------------------------------


def test_int8_model_is_smaller_and_recorded(int8):
    assert int8.stat().st_size < 0.5 * FLOAT_MODEL.stat().st_size  # int8 weights: a quarter of float32's bytes
    record = json.loads(int8.with_suffix(".json").read_text())
    assert record["source_sha256"] == quantize.sha256(FLOAT_MODEL)
    assert record["sha256"] == quantize.sha256(int8)
    assert json.loads(int8.with_name("labels.json").read_text()) == {str(d): str(d) for d in range(10)}


def test_quantize_is_skipped_when_up_to_date_and_is_deterministic(int8, tmp_path):
    written = int8.stat().st_mtime_ns
    again = _python("-m", f"{PACKAGE}.quantize", "--model", str(FLOAT_MODEL), "--out", str(int8))
    assert again.returncode == 0 and "up to date" in again.stdout
    assert int8.stat().st_mtime_ns == written
    other = tmp_path / "model.int8.onnx"
    assert _python("-m", f"{PACKAGE}.quantize", "--model", str(FLOAT_MODEL), "--out", str(other)).returncode == 0
    assert other.read_bytes() == int8.read_bytes()  # a fixed calibration set: the same bytes
    assert not quantize.up_to_date(REPO_ROOT / "models" / "iris_svc" / "model.onnx", int8)  # another source
    assert not quantize.up_to_date(FLOAT_MODEL, int8, calibration=100)  # other settings


def test_int8_agrees_with_float_on_the_test_split(int8):
    splits, _ = make_splits(None, 0.15, 0.15, 0)  # the pipeline's split: calibration was on its train part
    test = splits["test"]
    tops = {}
    for name, path in (("float", FLOAT_MODEL), ("int8", int8)):
        model = EdgeModel.load(name, path)
        tops[name] = np.array([model.classify(image).argmax() for image in test.images.astype(np.float32)])
    agreement = np.mean(tops["float"] == tops["int8"])
    accuracy = {name: np.mean(top == test.labels) for name, top in tops.items()}
    print(
        f"{len(test)} test images: agreement {agreement:.1%}, accuracy float {accuracy['float']:.1%}, "
        f"int8 {accuracy['int8']:.1%}"
    )
    assert agreement >= 0.97
    assert accuracy["float"] >= 0.95
    assert accuracy["int8"] >= accuracy["float"] - 0.02
    # The record quantize wrote says what was measured here.
    recorded = json.loads(int8.with_suffix(".json").read_text())["test_split"]
    assert recorded["agreement"] == pytest.approx(agreement)
    assert recorded["accuracy_int8"] == pytest.approx(accuracy["int8"])


# --- the client's output ----------------------------------------------------------------------------------


def test_each_frame_shows_the_top_3_labels_best_first(int8):
    result = edge(int8, "--frames", "5", "--throttle-ms", "0")
    assert result.returncode == 0, result.stderr
    frames = frames_of(result.stdout)
    assert len(frames) == 5
    for frame in frames:
        for shown in frame["models"].values():
            labels, scores = zip(*shown, strict=True)
            assert len(shown) == 3 and len(set(labels)) == 3
            assert set(labels) <= {str(d) for d in range(10)}
            assert list(scores) == sorted(scores, reverse=True) and 0 <= scores[-1] <= scores[0] <= 1
    # generated frames are named after their digit ("a 7 moved +1,-2"): the models read most of them
    for name in ("float", "int8"):
        right = [frame["models"][name][0][0] == frame["name"].split()[1] for frame in frames]
        assert sum(right) >= 4, (name, right)
    assert len(frames_of(edge(int8, "--frames", "1", "--top", "5", "--model", "int8").stdout)[0]["models"]["int8"]) == 5


def test_the_report_names_sizes_latencies_and_agreement(int8):
    result = edge(int8, "--frames", "3", "--throttle-ms", "0")
    report = result.stdout.split("\nreport: ")[1]
    assert report.startswith("3 frames, 0 skipped")
    for name, path in (("float", FLOAT_MODEL), ("int8", int8)):
        row = next(line for line in report.splitlines() if line.startswith(f"  {name} "))
        assert str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path) in row
        assert f"{path.stat().st_size:,}" in row
        assert len(re.findall(r"\d+\.\d+ ms", row)) == 3  # load, p50, p99
        assert row.endswith("3/3")  # right answers of the generated frames
    assert re.search(r"int8 is \d+% of float's size; top-1 agreement 3/3 \(100\.0%\)", report)


def test_the_throttle_spaces_the_analyses():
    """With throttle T, N frames take at least (N-1)*T: a lower bound, the app's behaviour, not a benchmark."""
    frames, throttle = 5, 0.5
    started = time.monotonic()
    result = _python(
        str(GUARD),
        f"{PACKAGE}.edge",
        "--frames",
        str(frames),
        "--model",
        "float",
        "--throttle-ms",
        str(throttle * 1000),
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed >= (frames - 1) * throttle
    times = [frame["at"] for frame in frames_of(result.stdout)]
    assert len(times) == frames
    # the printed times are rounded to 1 ms
    assert all(later - earlier >= throttle - 0.001 for earlier, later in itertools.pairwise(times))


# --- bad input ----------------------------------------------------------------------------------------------


def _png(base64_png: str, mode: str, format: str) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(base64.b64decode(base64_png))).convert(mode).save(buffer, format=format)
    return buffer.getvalue()


def test_a_folder_is_read_and_what_is_no_image_is_skipped(int8, tmp_path):
    digits = sample_digits()
    for digit, png in digits.items():
        (tmp_path / f"{digit}.png").write_bytes(base64.b64decode(png))
    (tmp_path / "3.png").write_bytes(_png(digits["3"], "RGBA", "PNG"))  # any mode the serving path takes
    (tmp_path / "7.png").unlink()
    (tmp_path / "7.jpg").write_bytes(_png(digits["7"], "L", "JPEG"))
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder").mkdir()  # not a file: not a frame either
    result = edge(int8, "--images", str(tmp_path), "--throttle-ms", "0")
    assert result.returncode == 0, result.stderr
    frames = frames_of(result.stdout)
    assert [frame["name"] for frame in frames] == [f"{d}.{'jpg' if d == '7' else 'png'}" for d in "0123456789"]
    for frame in frames:
        assert frame["models"]["float"][0][0] == frame["models"]["int8"][0][0] == frame["name"][0]
    for name in ("empty.png", "notes.txt"):
        assert f"skipped {name}, which is not an image Pillow can read (PNG, JPEG, ...)" in result.stderr
    assert "10 frames, 2 skipped" in result.stdout
    assert "skipped (not images): empty.png, notes.txt" in result.stdout


def test_a_folder_without_images_or_no_folder_is_refused(int8, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image\n")
    empty = edge(int8, "--images", str(tmp_path))
    assert empty.returncode == 2
    assert f"error: no image in {tmp_path} (PNG, JPEG, ...)" in empty.stderr
    missing = edge(int8, "--images", str(tmp_path / "nothing"))
    assert missing.returncode == 2
    assert f"error: {tmp_path / 'nothing'} is not a folder" in missing.stderr


def test_a_missing_or_broken_model_is_named_clearly(tmp_path):
    missing = tmp_path / "model.int8.onnx"
    result = edge(missing, "--frames", "1")
    assert result.returncode == 2
    assert f"error: no int8 model at {missing}; make it with `python -m {PACKAGE}.quantize`" in result.stderr
    assert "Traceback" not in result.stderr
    no_float = _python("-m", f"{PACKAGE}.quantize", "--model", str(tmp_path / "none.onnx"), "--out", str(missing))
    assert no_float.returncode == 2 and f"error: no float model at {tmp_path / 'none.onnx'}" in no_float.stderr
    assert not missing.exists()
    missing.write_text("not a model\n")
    broken = edge(missing, "--frames", "1")
    assert broken.returncode == 2
    assert f"error: cannot load a model: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from {missing}" in (
        broken.stderr
    )
    assert "Traceback" not in broken.stderr


# --- the compose topology, through the runner ------------------------------------------------------------


def test_the_compose_jobs_run_through_the_runner(pattern):
    """`make up` runs quantize, then the edge job over generated frames, which exits 0 with its report."""
    (job,) = pattern.run.processes("edge")
    assert job.wait(120) == 0
    logs = pattern.logs("edge")
    assert len(frames_of(logs)) == 10
    assert "report: 10 frames, 0 skipped, throttle 500 ms" in logs
    assert re.search(r"top-1 agreement \d+/10", logs)
    assert pattern.run.failure is None
