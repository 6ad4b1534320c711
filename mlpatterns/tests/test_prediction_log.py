"""The prediction log's queue and writer: whole lines from several processes, the full-queue policy, the flush at
close, and stdout. Real files in tmp_path, real threads and processes."""

import json
import multiprocessing
import os
import subprocess
import sys

import numpy as np

from mlpatterns.prediction_log import RECORDS, PredictionLog, PredictionLogSettings
from mlpatterns.runner.run import REPO_ROOT


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def dropped() -> float:
    return RECORDS.labels("dropped")._value.get()


def write_records(path: str, writer: int, count: int, go) -> None:
    # Lines far longer than PIPE_BUF (4 KiB), written by two processes at once, and every write() short, as the
    # kernel may make it (a signal, another file system): without the lock, lines of the two would interleave.
    real_write = os.write
    os.write = lambda fd, data: real_write(fd, data[:4096])  # this forked child's own os module
    log = PredictionLog(path, stdout=False)
    for index in range(count):
        log.put({"writer": writer, "index": index, "padding": "x" * 20_000})
    go.wait(30)  # both writers start at once, each with its whole queue to write
    log.start()
    log.close()


def test_two_processes_append_whole_lines_to_one_file(tmp_path):
    path = tmp_path / "log" / "predictions.jsonl"
    context = multiprocessing.get_context("fork")
    go = context.Event()
    writers = [context.Process(target=write_records, args=(str(path), writer, 300, go)) for writer in (1, 2)]
    for process in writers:
        process.start()
    go.set()
    for process in writers:
        process.join(60)
        assert process.exitcode == 0
    records = lines(path)  # every line parses
    assert len(records) == 600
    for writer in (1, 2):  # each writer's records, all of them, in its own order
        assert [r["index"] for r in records if r["writer"] == writer] == list(range(300))


def test_close_writes_every_queued_record(tmp_path):
    path = tmp_path / "predictions.jsonl"
    # The writer would gather for a minute before writing: only close() can have written these.
    log = PredictionLog(path, stdout=False, flush_seconds=60).start()
    for index in range(100):
        log.put({"index": index})
    assert path.read_text() == ""
    log.close()
    assert [r["index"] for r in lines(path)] == list(range(100))


def test_the_file_is_rotated_when_full_and_every_writer_follows(tmp_path):
    path = tmp_path / "predictions.jsonl"
    # Two writers on the one file (two workers); their threads sleep, the test calls their writes in turn.
    first, second = (PredictionLog(path, stdout=False, flush_seconds=60, max_bytes=1500).start() for _ in range(2))
    try:
        batch = [{"padding": "x" * 280} for _ in range(2)]  # about 600 bytes

        def write(log, name: str) -> None:
            log._write([{"batch": name, **record} for record in batch])

        write(first, "a1")
        write(second, "b1")  # 1,200 bytes: still within 1,500
        write(first, "a2")  # would make 1,800: the file is renamed to .1 first
        write(second, "b2")  # its file was renamed: it follows to the new one
    finally:
        first.close()
        second.close()
    batches = [[r["batch"] for r in lines(file)][::2] for file in (tmp_path / "predictions.jsonl.1", path)]
    assert batches == [["a1", "b1"], ["a2", "b2"]]


def test_a_full_queue_drops_and_counts_after_the_wait(tmp_path):
    log = PredictionLog(tmp_path / "predictions.jsonl", stdout=False, queue_size=2, max_wait_seconds=0.01)
    before = dropped()
    # Not started: nothing empties the queue.
    assert [log.put({"index": index}) for index in range(3)] == [True, True, False]
    assert dropped() - before == 1
    log.start()
    log.close()
    assert [r["index"] for r in lines(tmp_path / "predictions.jsonl")] == [0, 1]


class Event:
    """An object that becomes its record in the writer thread, with numpy values as the outlier app's events."""

    def record(self) -> dict:
        return {"scores": np.array([[0.5, 0.25]], dtype=np.float32), "is_outlier": np.array([True])}


def test_objects_become_records_in_the_writer_and_numpy_is_json(tmp_path):
    log = PredictionLog(tmp_path / "predictions.jsonl", stdout=False).start()
    log.put(Event())
    log.close()
    assert lines(tmp_path / "predictions.jsonl") == [{"scores": [[0.5, 0.25]], "is_outlier": [True]}]


def test_a_record_that_is_no_json_is_counted_and_the_rest_written(tmp_path):
    failed = RECORDS.labels("failed")._value.get()
    log = PredictionLog(tmp_path / "predictions.jsonl", stdout=False)
    for record in ({"index": 0}, {"index": object()}, {"index": 2}):
        log.put(record)
    log.start().close()
    assert [r["index"] for r in lines(tmp_path / "predictions.jsonl")] == [0, 2]
    assert RECORDS.labels("failed")._value.get() - failed == 1


def test_stdout_gets_the_same_lines_and_no_path_means_stdout_only(tmp_path):
    code = (
        "from mlpatterns.prediction_log import PredictionLog\n"
        "log = PredictionLog(None).start()\n"
        "for i in range(3): log.put({'index': i})\n"
        "log.close()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [{"index": i} for i in range(3)]
    assert os.listdir(tmp_path) == []


def test_settings_read_on_and_off(monkeypatch):
    monkeypatch.setenv("PREDICTION_LOG", "off")
    monkeypatch.setenv("LOG_PATH", "/var/log/predictions/predictions.jsonl")
    settings = PredictionLogSettings()
    assert settings.prediction_log is False
    assert str(settings.log_path) == "/var/log/predictions/predictions.jsonl"
