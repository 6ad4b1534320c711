"""`make demo`: what it counts and prints (against a real server), and one pattern's demo run end to end."""

import subprocess
import sys

from mlpatterns.demo import DemoClient
from mlpatterns.runner.run import REPO_ROOT
from mlpatterns.tests.upstream_apps import serve


def test_answers_refusals_asked_for_and_unexpected_answers_are_counted_and_summed_up(capsys):
    with serve("create_upstream_app") as server:
        client = DemoClient({"web": f"http://127.0.0.1:{server.port}"})
        web = client.service("web")
        web.get("/ok")
        web.get("/missing", expect=404)  # a refusal the demo asks for
        web.get("/missing")  # a 404 nobody asked for
        web.get("/ok", expect=422)  # a refusal asked for that did not come
        web.get("/fail")
        web.get("/ok", answer={"ok": True})
        web.get("/ok", answer={"ok": False})  # the right status, the wrong answer
        web.get("/missing", expect=404, answer={"detail": "no such model"})
        client.close()
    out = capsys.readouterr().out
    assert '-> 404 {"detail": "no such model"}  (refused as expected)' in out
    assert '-> 404 {"detail": "no such model"}  (UNEXPECTED)' in out
    assert '-> 200 {"ok": true}  (UNEXPECTED: expected 422)' in out
    assert '-> 200 {"ok": true}  (WRONG ANSWER: expected {"ok": false})' in out
    assert (client.answered, client.refused, client.server_errors) == (2, 2, 1)
    assert client.summary() == (
        "8 requests: 2 answered, 2 refused as expected, 4 unexpected "
        '(GET web/missing -> 404; GET web/ok -> 200; GET web/fail -> 500; GET web/ok -> 200, not {"ok": false})'
    )


def test_headers_are_sent_and_printed_with_their_request(capsys):
    with serve("create_upstream_app") as server:
        client = DemoClient({"web": f"http://127.0.0.1:{server.port}"})
        client.service("web").get("/echo", headers={"X-Request-ID": "demo-1"}, answer={"request_id": "demo-1"})
        client.close()
    assert "\n  GET web/echo  X-Request-ID: demo-1\n" in capsys.readouterr().out
    assert (client.answered, client.unexpected) == (1, [])


def test_the_cifar10_demo_sends_one_channel_and_gets_the_shape_message_then_sums_up():
    result = subprocess.run(
        [sys.executable, "-m", "mlpatterns.runner", "demo", "chapter2_training/cifar10"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert '-> 200 {"prediction": ["0", "1", "2"]}' in result.stdout
    shape = "each item must have shape 3x32x32; got items of shape 1x28x28"
    assert f'-> 422 {{"detail": "{shape}"}}  (refused as expected)' in result.stdout
    assert result.stdout.rstrip().endswith(
        "=== summary ===\n  chapter2_training/cifar10: 4 requests: 3 answered, 1 refused as expected, 0 unexpected"
    )


def test_an_answer_matches_the_fields_it_names_at_every_depth():
    from mlpatterns.demo import _matches

    payload = {"prediction": [{"label": "setosa", "proba": 0.98}], "mode": "iris_svc.onnx"}
    assert _matches(payload, {"prediction": [{"label": "setosa"}]})
    assert _matches(payload, {"mode": "iris_svc.onnx"})
    assert not _matches(payload, {"prediction": [{"label": "virginica"}]})
    assert not _matches(payload, {"prediction": [{"label": "setosa"}, {"label": "setosa"}]})  # one row, not two
    assert not _matches(payload, {"model": "iris_svc.onnx"})  # a field it lacks
    assert not _matches([payload], {"mode": "iris_svc.onnx"})


def test_a_path_without_a_demo_is_refused_before_anything_starts():
    result = subprocess.run(
        [sys.executable, "-m", "mlpatterns.runner", "demo", "chapter6_operation_management/README.md"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == "error: chapter6_operation_management/README.md is not a pattern directory with a demo.py\n"
