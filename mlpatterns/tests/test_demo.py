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
        client.close()
    out = capsys.readouterr().out
    assert '-> 404 {"detail": "no such model"}  (refused as expected)' in out
    assert '-> 404 {"detail": "no such model"}  (UNEXPECTED)' in out
    assert '-> 200 {"ok": true}  (UNEXPECTED: expected 422)' in out
    assert (client.answered, client.refused, client.server_errors) == (1, 1, 1)
    assert client.summary() == (
        "5 requests: 1 answered, 1 refused as expected, 3 unexpected "
        "(GET web/missing -> 404; GET web/ok -> 200; GET web/fail -> 500)"
    )


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
