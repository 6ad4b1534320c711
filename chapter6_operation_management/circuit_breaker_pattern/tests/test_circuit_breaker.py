"""End to end: HAProxy (Debian's, on haproxy.cfg) in front of three iris backends, started by the local runner as
`make up` starts them; and the numbers of haproxy.cfg tied to the Istio objects that carry the same policy.

What the pattern promises: while the backends answer, every answer is theirs, round robin; when they are slow or
overloaded, every prediction is still answered at once with a 200, the real one or the fallback (marked
`"fallback": true`), never a queue or a 5xx; a failing backend is ejected and traffic goes to the others until it
is back. The overload tests start the pattern with small limits (the compose values are Istio's 100s).
Generic bad input is tests/test_bad_input.py's; the OpenAPI contract tests/test_contract.py's.
"""

import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from mlpatterns.haproxy_config import HAProxyConfig, to_seconds
from mlpatterns.runner.backing import free_port, port_in_use
from mlpatterns.runner.compose import load_services
from mlpatterns.testing import assert_healthy, assert_refused, start_pattern

PATTERN = Path(__file__).parents[1]
BACKENDS = {"a": "iris_a", "b": "iris_b", "c": "iris_c"}  # HAProxy's server name -> compose service
SETOSA = [5.1, 3.5, 1.4, 0.2]
PRIOR = [1 / 3, 1 / 3, 1 / 3]  # the fallback's probabilities: each species' share of the training set

# Small limits, so that a burst of a few dozen requests goes beyond them: 2 connections per backend, 2 waiting.
SMALL = {
    "MAX_CONNECTIONS": "2",
    "MAX_PENDING_REQUESTS": "2",
    "PER_TRY_TIMEOUT": "300ms",
    "REQUEST_TIMEOUT": "500ms",
    "CONSECUTIVE_5XX_ERRORS": "2",
    "EJECTION_INTERVAL": "500ms",
    "EJECTION_CHECKS": "4",  # 2 s of good checks
}
# The longest a request may take with SMALL: waiting for a connection, then 3 tries; with room for a slow machine.
ANSWER_BOUND = 5.0


@pytest.fixture(scope="module")
def breaker(pattern):
    return pattern.client("breaker")


def predict(url: str, path: str = "/predict", client: httpx.Client | None = None) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = (client or httpx).post(url + path, json={"data": [SETOSA]}, timeout=60)
    return response, time.perf_counter() - start


def burst(url: str, requests: int) -> list[tuple[httpx.Response, float]]:
    """`requests` predictions sent at once, each on its own connection."""
    with httpx.Client(limits=httpx.Limits(max_connections=requests)) as client, ThreadPoolExecutor(requests) as pool:
        return list(pool.map(lambda _: predict(url, client=client), range(requests)))


def is_fallback(response: httpx.Response) -> bool:
    answer = response.json()
    if answer.get("fallback"):
        assert answer == {"prediction": [pytest.approx(PRIOR)], "fallback": True}
        assert "x-served-by" not in response.headers and response.headers["x-fallback"]
        return True
    assert "fallback" not in answer and response.headers["x-served-by"] in BACKENDS
    return False


@contextmanager
def stalled(started, *services: str):
    """The services' processes stopped (SIGSTOP to each whole process group: the gunicorn master and its
    workers) until the block ends: they accept connections and answer nothing."""
    groups = [started.run.processes(name)[0].pid for name in services]
    for group in groups:
        os.killpg(group, signal.SIGSTOP)
    try:
        yield
    finally:
        for group in groups:
            os.killpg(group, signal.SIGCONT)


def server_state(started, server: str) -> str:
    """UP or DOWN: the breaker's view of one backend, from its Prometheus metrics."""
    for line in started.client("breaker").get("/proxy/metrics").text.splitlines():
        if line.startswith(f'haproxy_server_status{{proxy="iris",server="{server}",') and line.endswith(" 1"):
            return line.split('state="')[1].split('"')[0]
    raise AssertionError(f"no state of server {server!r} in the breaker's metrics")


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.1)


def answered_by(started, count: int) -> set[str]:
    """Who answered `count` predictions in a row: backends' names, and "fallback" if any was."""
    names = set()
    for _ in range(count):
        response, _ = predict(started.url("breaker"))
        assert response.status_code == 200, response.text
        names.add("fallback" if is_fallback(response) else response.headers["x-served-by"])
    return names


# -- the circuit closed ------------------------------------------------------------------------------------


def test_real_answers_come_from_every_backend_in_turn(pattern, breaker):
    direct = pattern.client("iris_a").post("/predict", json={"data": [SETOSA]}).json()
    names = []
    for _ in range(6):
        response = breaker.post("/predict", json={"data": [SETOSA]})
        assert response.status_code == 200 and response.json() == direct
        names.append(response.headers["x-served-by"])
    assert sorted(names) == ["a", "a", "b", "b", "c", "c"]  # round robin
    assert breaker.post("/predict/label", json={"data": [SETOSA]}).json() == {"prediction": ["setosa"]}
    assert breaker.get("/predict/test/label").json() == {"prediction": ["setosa"]}
    assert breaker.get("/health").json() == {"health": "ok"}


def test_bad_input_is_the_backends_4xx_never_a_fallback(breaker):
    assert_refused(breaker.post("/predict", json={"data": [SETOSA[:3]]}), 422, "each row must have shape 4")
    assert_refused(breaker.post("/predict/label", json={"rows": [SETOSA]}), 422)
    assert_refused(breaker.post("/predict", content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert_healthy(breaker)


# -- the circuit open ---------------------------------------------------------------------------------------


def test_a_burst_beyond_the_limits_is_answered_at_once_real_or_fallback():
    with start_pattern(PATTERN, overrides={"breaker": SMALL}) as started:
        url = started.url("breaker")
        # One backend stalls: the burst is answered by the two others or, beyond their limits, by the fallback.
        with stalled(started, "iris_a"):
            answers = burst(url, 30)
            for response, seconds in answers:
                assert response.status_code == 200, response.text
                assert seconds < ANSWER_BOUND, f"{seconds:.1f} s, while the stalled backend never answers"
            real = [response for response, _ in answers if not is_fallback(response)]
            assert real and {response.headers["x-served-by"] for response in real} <= {"b", "c"}

            # All three stall: every prediction is the fallback, and once the waiting room is full, at once.
            with stalled(started, "iris_b", "iris_c"):
                answers = burst(url, 30)
                assert all(response.status_code == 200 and is_fallback(response) for response, _ in answers)
                assert max(seconds for _, seconds in answers) < ANSWER_BOUND
                opened = [seconds for response, seconds in answers if response.headers["x-fallback"] == "circuit open"]
                assert len(opened) >= 30 - (3 * 2 + 2)  # beyond 3 backends x 2 connections + 2 waiting
                label, _ = predict(url, "/predict/label")
                assert label.status_code == 200 and label.json() == {"prediction": [None], "fallback": True}
                # Routes that are no prediction have no fallback: their failure is said as it is.
                wait_until(lambda: server_state(started, "c") == "DOWN", 30, "the stalled backends marked down")
                health = httpx.get(url + "/health", timeout=30)
                assert health.status_code == 503 and health.json() == {"detail": "no backend could answer"}

        # Recovery: the backends answer again, and once they pass their check, real answers return from all three.
        wait_until(lambda: answered_by(started, 6) == set(BACKENDS), 60, "real answers from every backend")


def test_a_failing_backend_is_ejected_until_its_ejection_time_is_over():
    ejection = 5.0  # baseEjectionTime: 10 good checks, 0.5 s apart
    overrides = {"breaker": {**SMALL, "EJECTION_CHECKS": "10"}}
    with start_pattern(PATTERN, overrides=overrides) as started:
        assert answered_by(started, 3) == set(BACKENDS)
        with stalled(started, "iris_a"):
            # Its timeouts are errors: two in a row eject it (its share of the requests meanwhile: the fallback).
            wait_until(lambda: answered_by(started, 3) and server_state(started, "a") == "DOWN", 30, "a ejected")
        ejected = time.monotonic()
        assert "Server iris/a is DOWN, reason: Health analyze" in started.logs("breaker")  # not its active check
        # Answering again, it stays out until its ejection time is over: the healthy ones answer everything.
        assert _healthy(started.url("iris_a"))
        assert answered_by(started, 12) == {"b", "c"}
        # (back after 10 good checks in a row, the first of which may have been sent before it answered again)
        earliest = ejection - 2 * 0.5
        assert server_state(started, "a") == "DOWN" or time.monotonic() - ejected >= earliest
        wait_until(lambda: "a" in answered_by(started, 3), ejection + 30, "backend a back in the rotation")
        assert time.monotonic() - ejected >= earliest
        assert answered_by(started, 6) == set(BACKENDS)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


class Backend(BaseHTTPRequestHandler):
    """A stand-in backend that is well (/health) but answers every prediction with `status`."""

    status = 200

    def do_GET(self):
        self.answer(200, {"health": "ok"})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(self.status, {"prediction": [[1.0, 0.0, 0.0]]} if self.status == 200 else {"detail": "boom"})

    def answer(self, status: int, body: dict) -> None:
        content = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args):  # quiet
        pass


@contextmanager
def backend(status: int):
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Backend", (Backend,), {"status": status}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_backend_answering_5xx_falls_back_and_is_ejected_after_its_errors_in_a_row():
    """The breaker's configuration alone (Debian's haproxy on haproxy.cfg), in front of stand-ins: one answers
    every prediction with a 500 while its health check passes, as a backend with a broken model would."""
    with backend(500) as failing, backend(200) as well, backend(200) as also_well:
        port = free_port()
        # Checks 30 s apart: a good health check between two errors starts their count again (see the README).
        env = {**breaker_environment(), **SMALL, "EJECTION_INTERVAL": "30s", "HOST": "127.0.0.1", "PORT": str(port)}
        env.update(IRIS_A=failing, IRIS_B=well, IRIS_C=also_well, PATH=os.environ["PATH"] + ":/usr/sbin:/sbin")
        proxy = subprocess.Popen(
            ["haproxy", "-db", "-f", str(PATTERN / "haproxy" / "haproxy.cfg")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_until(lambda: port_in_use(port), 10, "haproxy listening")
            url = f"http://127.0.0.1:{port}"
            answers = [predict(url)[0] for _ in range(9)]
            assert all(response.status_code == 200 for response in answers)
            fallbacks = [response for response in answers if is_fallback(response)]
            # a's 500s: the fallback, until its second in a row ejects it (CONSECUTIVE_5XX_ERRORS); b and c: real.
            assert [response.headers["x-fallback"] for response in fallbacks] == ["backend error 500"] * 2
            assert {response.headers["x-served-by"] for response in answers if response not in fallbacks} == {"b", "c"}
            assert all(not is_fallback(predict(url)[0]) for _ in range(6))
        finally:
            proxy.terminate()
            try:
                log = proxy.communicate(timeout=10)[0]
            except subprocess.TimeoutExpired:
                proxy.kill()
                log = proxy.communicate()[0]
        assert 'Server iris/a is DOWN, reason: Health analyze, info: "Detected 2 consecutive errors' in log


# -- the same numbers as the Istio objects -------------------------------------------------------------------


def istio_objects() -> dict[str, dict]:
    docs = yaml.safe_load_all((PATTERN / "manifests" / "istio.yml").read_text())
    return {doc["kind"]: doc["spec"] for doc in docs}


def breaker_environment() -> dict[str, str]:
    (service,) = [s for s in load_services(PATTERN / "docker-compose.yml", environ={}) if s.name == "breaker"]
    return service.environment


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def test_haproxy_carries_the_destination_rule_and_virtual_service_numbers():
    config = HAProxyConfig.read(PATTERN / "haproxy" / "haproxy.cfg")
    env = breaker_environment()
    istio = istio_objects()
    pool = istio["DestinationRule"]["trafficPolicy"]["connectionPool"]
    outlier = istio["DestinationRule"]["trafficPolicy"]["outlierDetection"]
    (route,) = istio["VirtualService"]["http"]
    server = [word for words in config.directives("iris", "default-server") for word in words]

    def setting(word: str) -> str:
        """The compose value of a "${VAR}" in haproxy.cfg."""
        assert word.startswith("${") and word.endswith("}"), f"{word!r} does not come from the environment"
        return env[word[2:-1]]

    # connectionPool
    assert int(setting(option(server, "maxconn"))) == pool["tcp"]["maxConnections"] == 100
    assert to_seconds(setting(config.value("defaults", "timeout", "connect"))) == to_seconds(
        pool["tcp"]["connectTimeout"]
    )
    assert int(setting(option(server, "max-reuse"))) + 1 == pool["http"]["maxRequestsPerConnection"] == 100
    (pending,) = [words for words in config.directives("iris", "acl", "circuit_open") if words[0] == "queue(iris)"]
    assert pending[1] == "ge" and int(setting(pending[2])) == pool["http"]["http1MaxPendingRequests"] == 100
    # outlierDetection
    assert "consecutiveErrors" not in outlier  # deprecated: Envoy's 5xx counter is consecutive5xxErrors
    assert int(setting(option(server, "error-limit"))) == outlier["consecutive5xxErrors"] == 100
    assert option(server, "observe") == "layer7" and option(server, "on-error") == "mark-down"
    interval = to_seconds(setting(option(server, "inter")))
    assert interval == to_seconds(outlier["interval"]) == 1
    assert int(setting(option(server, "rise"))) * interval == to_seconds(outlier["baseEjectionTime"]) == 600
    # The same checks take out a backend that fails 3 of them, as Kubernetes takes a pod out of the Service.
    readiness = yaml.safe_load((PATTERN / "manifests" / "deployment.yml").read_text())["spec"]["template"]["spec"][
        "containers"
    ][0]["readinessProbe"]
    assert int(option(server, "fall")) == readiness["failureThreshold"]
    replicas = yaml.safe_load((PATTERN / "manifests" / "deployment.yml").read_text())["spec"]["replicas"]
    assert outlier["maxEjectionPercent"] * replicas // 100 >= 1, "no pod could ever be ejected (the original's 10%)"
    # VirtualService: timeout, retries
    assert to_seconds(setting(config.value("defaults", "timeout", "queue"))) == to_seconds(route["timeout"])
    assert to_seconds(setting(config.value("defaults", "timeout", "server"))) == to_seconds(
        route["retries"]["perTryTimeout"]
    )
    assert int(setting(config.value("defaults", "retries"))) == route["retries"]["attempts"]
    assert [server[0] for server in config.servers("iris").values()] == ["${IRIS_A}", "${IRIS_B}", "${IRIS_C}"]
    assert {env[f"IRIS_{name.upper()}"] for name in BACKENDS} == {f"{service}:8000" for service in BACKENDS.values()}
