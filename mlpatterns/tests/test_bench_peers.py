"""The peers bench's own parts, none of which needs a peer installed (installing one takes minutes and PyPI).

`python -m mlpatterns.bench.peers --seconds 2 --rounds 1` runs the whole of it; these check what it decides:
which peers, whether an answer matches ours, what a failed install does, what the report says, and that the
CPU meter follows workers that leave the server's session.
"""

import argparse
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

from mlpatterns.bench import cpu
from mlpatterns.bench.peers import PEERS, data_request, prediction_of
from mlpatterns.bench.peers.bench import (
    MODEL_PATH,
    WEB_SINGLE,
    WORKERS,
    AnswerMismatch,
    Server,
    batch_rows,
    check_answers,
    compare,
    main,
    parse_peers,
    render,
    start_peer,
)
from mlpatterns.bench.peers.venvs import PeerUnavailable, ensure_venv, requirements
from mlpatterns.bench.run import Figures
from mlpatterns.runner.compose import load_services
from mlpatterns.runner.run import REPO_ROOT, run_pattern
from mlpatterns.settings import IRIS_SAMPLE


def test_peers_are_named_in_any_order_each_once():
    assert parse_peers("ray,mlserver") == ["ray", "mlserver"]
    assert parse_peers(" BentoML, ray,ray ") == ["bentoml", "ray"]
    for wrong in ("torchserve", "mlserver,,kserve", " , "):
        with pytest.raises(argparse.ArgumentTypeError, match="name one or more of mlserver, bentoml, ray"):
            parse_peers(wrong)


def test_an_unknown_peer_stops_the_command_before_anything_is_installed(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--peers", "mlserver,triton"])
    assert stopped.value.code == 2
    assert "triton: name one or more of mlserver, bentoml, ray" in capsys.readouterr().err


def test_the_peers_serve_the_model_of_web_single_with_as_many_workers():
    service = load_services(REPO_ROOT / WEB_SINGLE / "docker-compose.yml")[0]
    assert (service.environment["MODEL_PATH"], service.environment["WORKERS"]) == (MODEL_PATH, str(WORKERS))


def test_the_batch_is_a_hundred_iris_rows_of_every_class_the_same_each_run():
    rows = batch_rows()
    assert rows == batch_rows() and len(rows) == 100 and all(len(row) == 4 for row in rows)
    assert len({tuple(row) for row in rows}) > 90  # not one row repeated


def test_each_peer_gets_its_own_request_format_and_its_answer_is_read_back():
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    request = PEERS["mlserver"].encode(rows)  # the open inference protocol: a flat tensor and its shape
    assert request == {"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32", "data": [*rows[0], *rows[1]]}]}
    answer = {"outputs": [{"name": "probabilities", "shape": [2, 3], "datatype": "FP32", "data": [1, 0, 0, 0, 0, 1]}]}
    np.testing.assert_array_equal(PEERS["mlserver"].decode(answer), [[1, 0, 0], [0, 0, 1]])
    for name in ("bentoml", "ray"):
        assert PEERS[name].encode(rows) == {"data": rows}
        np.testing.assert_array_equal(PEERS[name].decode({"prediction": [[0.5, 0.5, 0]]}), [[0.5, 0.5, 0]])


def test_an_answer_that_differs_by_more_than_the_tolerance_stops_with_the_row_and_both_answers():
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    ours = np.array([[0.9, 0.08, 0.02], [0.01, 0.2, 0.79]])
    compare("Peer", rows, ours, ours + 5e-7)  # float32 rounding: the same model
    with pytest.raises(
        AnswerMismatch, match=r"Peer answers \[0\.01, 0\.2, 0\.7901\] for row \[6\.7, 3\.0, 5\.2, 2\.3\]"
    ):
        compare("Peer", rows, ours, ours + np.array([[0, 0, 0], [0, 0, 1e-4]]))
    with pytest.raises(AnswerMismatch, match=r"shape \(1, 3\) for 2 rows, ours \(2, 3\)"):
        compare("Peer", rows, ours, ours[:1])


def test_the_answer_check_asks_every_server_over_http_and_names_the_one_that_differs():
    """Ours (web_single, really served) against itself read honestly, and read through a wrong decoder."""
    with run_pattern("chapter4_serving_patterns/web_single_pattern") as run:
        url, pid = run.url("web") + "/predict", run.running["web"].process.pid
        ours = Server("ours", url, pid, data_request, prediction_of)
        honest = Server("honest peer", url, pid, data_request, prediction_of)
        floor = Server("echo", url, pid, data_request, None)  # no model: never compared
        check_answers([ours, honest, floor], [IRIS_SAMPLE, batch_rows()])
        off = Server("off peer", url, pid, data_request, lambda answer: prediction_of(answer)[:, ::-1])
        with pytest.raises(AnswerMismatch, match="off peer answers .* for row .*: the servers do not run the same"):
            check_answers([ours, honest, off], [IRIS_SAMPLE])


def test_a_peer_that_will_not_install_is_reported_with_its_output(tmp_path):
    peer = PEERS["bentoml"]
    failing = [sys.executable, "-c", "import sys; print('no matching distribution'); sys.exit(3)"]
    with pytest.raises(PeerUnavailable, match="(?s)exited with code 3.*no matching distribution"):
        ensure_venv(peer, build=tmp_path, base_python=failing)
    assert not (tmp_path / "bentoml" / "installed.txt").exists()


def test_an_installed_peer_is_reused_and_a_changed_pin_installs_again(tmp_path):
    peer = PEERS["ray"]
    python = tmp_path / "ray" / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    record = tmp_path / "ray" / "installed.txt"
    record.write_text("\n".join(requirements(peer)) + "\n")
    refuse = [sys.executable, "-c", "raise SystemExit(1)"]  # would fail if anything were installed
    assert ensure_venv(peer, build=tmp_path, base_python=refuse) == python
    record.write_text("ray[serve]==2.0.0\n")
    with pytest.raises(PeerUnavailable):
        ensure_venv(peer, build=tmp_path, base_python=refuse)


def test_the_report_gives_every_figure_and_ours_over_the_best_peer_at_32_connections():
    servers = ["ours (web_single)", "FastAPI JSON echo (floor)", "MLServer 1.7.1", "BentoML 1.4.40"]
    rps = {"ours (web_single)": 6000.0, "FastAPI JSON echo (floor)": 8000.0, "MLServer 1.7.1": 2000.0}
    rps["BentoML 1.4.40"] = 800.0
    cpu = {
        "ours (web_single)": 300.0,
        "FastAPI JSON echo (floor)": 200.0,
        "MLServer 1.7.1": 900.0,
        "BentoML 1.4.40": 1200.0,
    }
    labels = [f"{server}, {rows}" for rows in ("1 row", "100 rows") for server in servers]
    figures = {
        (label, connections): Figures(
            rps=rps[label.split(", ")[0]] / (2 if "100" in label else 1) / (3 if connections == 1 else 1),
            p50_ms=1.0,
            p99_ms=2.0,
            cpu_us_per_request=cpu[label.split(", ")[0]],
            errors=0,
            other_cpu=0.05,
        )
        for label in labels
        for connections in (1, 32)
    }
    args = argparse.Namespace(rounds=3, seconds=5.0, warmup=2.0)
    report = render(args, servers, labels, figures, {"ray": "ray exited before it served:\nGCS ..."})
    assert "| MLServer 1.7.1, 100 rows | 32 | 1,000 | 1.00 ms | 2.00 ms | 900 µs | 0 |" in report
    assert (
        "- 1 row a request, 32 connections: ours 6,000 req/s, **3.0x** the best peer's (MLServer 1.7.1, 2,000)"
        in report
    )
    assert "- 100 rows a request, 32 connections: ours 3,000 req/s, **3.0x** the best peer's" in report
    assert (
        "75% of the echo floor's; server CPU per request 300 µs, "
        "the leanest peer's 900 µs (MLServer 1.7.1, **3.0x** ours)" in report
    )
    assert "- ray: not measured: ray exited before it served:" in report
    assert "`parallel_workers: 0`" in report and "own venv: bentoml==1.4.40" in report


def test_the_cpu_meter_counts_workers_that_lead_sessions_of_their_own():
    """BentoML's workers and Ray's actors leave the server's process group: their CPU is the server's all the same."""
    burn = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    spawn = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {burn!r}], start_new_session=True)\n"
        "time.sleep(30)"
    )
    server = subprocess.Popen([sys.executable, "-c", spawn], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while cpu._group_cpu(server.pid) < 0.4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cpu._group_cpu(server.pid) >= 0.4  # the interpreters' start-up, and the worker's 0.4 s
    finally:
        with open(f"/proc/{server.pid}/task/{server.pid}/children") as children:
            for pid in map(int, children.read().split()):
                os.kill(pid, signal.SIGKILL)  # reaped by the server's exit: init adopts it
        server.kill()
        server.wait()


def test_a_peer_that_will_not_start_is_reported_with_its_log_and_nothing_is_left_running(tmp_path):
    """A server that leaves a worker behind and exits: the bench reports its log and stops the worker."""
    server = tmp_path / "broken_server.py"
    server.write_text(
        "import os, subprocess, sys\n"
        "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('worker', worker.pid, 'cannot load', os.environ['MODEL_PATH'], flush=True)\n"
        "raise SystemExit(4)\n"
    )
    peer = dataclasses.replace(PEERS["bentoml"], name="broken", server=str(server))  # an absolute path stays so
    with ExitStack() as stack:
        with pytest.raises(
            PeerUnavailable, match=f"(?s)broken exited before it served.*cannot load {MODEL_PATH}"
        ) as failed:
            start_peer(stack, peer, Path(sys.executable))
        worker = Path("/proc", re.search(r"worker (\d+)", str(failed.value)).group(1))
        deadline = time.monotonic() + 15
        while worker.exists() and time.monotonic() < deadline:  # TERM to its group, then reaped by init
            time.sleep(0.1)
        assert not worker.exists()
