"""Timeouts and honest statuses of the HTTP core, on real servers and sockets: a body that does not arrive in time
is answered 408, a connection that does not send its headers in time is closed, connections per worker are
capped, and a client that goes away mid-body counts as 499 at INFO, not as a server error.

The servers run with short bounds (seconds) so that each case takes a few seconds."""

import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from mlpatterns.runner import run_pattern
from mlpatterns.tests.upstream_apps import serve

WEB_SINGLE = "chapter4_serving_patterns/web_single_pattern"
BODY_TIMEOUT, BODY_IDLE_TIMEOUT, HEADER_TIMEOUT, KEEPALIVE = 4.0, 1.5, 3.0, 2
BODY_LIMITS = {"BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT), "BODY_IDLE_TIMEOUT_SECONDS": str(BODY_IDLE_TIMEOUT)}
CONNECTION_LIMITS = {"HEADER_TIMEOUT": str(HEADER_TIMEOUT), "KEEPALIVE": str(KEEPALIVE)}
ROW = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'
SLACK = 1.5  # a deadline is checked once per tick (a quarter of it here) and these machines are busy


@dataclass
class Service:
    port: int
    path: str  # a POST route taking ROW
    logs: Callable[[], str]


# web single under gunicorn (httptools, the route's fast path that reads the body itself), and the test upstream
# under uvicorn's h11 protocol (FastAPI's standard body parsing, which turns a failed read into a 400).
@pytest.fixture(scope="module", params=["gunicorn-httptools", "uvicorn-h11"])
def service(request) -> Service:
    if request.param == "gunicorn-httptools":
        with run_pattern(WEB_SINGLE, overrides={"web": {**BODY_LIMITS, **CONNECTION_LIMITS}}) as run:
            yield Service(run.port("web"), "/predict", lambda: run.logs("web"))
    else:
        with serve("create_upstream_app", "--http", "h11", env=BODY_LIMITS) as upstream:
            yield Service(upstream.port, "/echo", upstream.logs)


def connect(port: int, timeout: float = 30) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def head(path: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def read_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while data := sock.recv(65536):
        answer += data
    return answer


def read_response(sock: socket.socket) -> bytes:
    """One whole response: the head, then as many body bytes as its Content-Length says (TCP may split them)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head_part, _, body = answer.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head_part).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    assert len(body) == length, f"more than one response: {answer!r}"
    return answer


def assert_408(answer: bytes, detail: str) -> None:
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    assert b"connection: close" in headers.lower().split(b"\r\n")
    assert json.loads(body) == {"detail": detail}


def request_counts(port: int, path: str) -> dict[str, float]:
    """`http_requests_total` of POST `path` by status."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    pattern = rf'http_requests_total{{method="POST",path="{re.escape(path)}",status="(\d+)"}} (\S+)'
    return {status: float(count) for status, count in re.findall(pattern, text)}


def served(port: int, path: str) -> bool:
    return (
        httpx.post(
            f"http://127.0.0.1:{port}{path}", content=ROW, headers={"content-type": "application/json"}, timeout=10
        ).status_code
        == 200
    )


def test_a_body_that_stalls_is_answered_408_and_its_connection_closed(service):
    start = time.monotonic()
    with connect(service.port) as sock:
        sock.sendall(head(service.path, len(ROW)) + ROW[:10])
        answer = read_until_closed(sock)  # the server closes: recv returns b""
    assert BODY_IDLE_TIMEOUT <= time.monotonic() - start < BODY_IDLE_TIMEOUT + SLACK
    assert_408(answer, f"request body stalled: nothing received for {BODY_IDLE_TIMEOUT:g} s")
    assert served(service.port, service.path)


def test_a_body_shorter_than_its_content_length_is_answered_408(service):
    with connect(service.port) as sock:
        sock.sendall(head(service.path, len(ROW) + 10) + ROW)
        answer = read_until_closed(sock)
    assert_408(answer, f"request body stalled: nothing received for {BODY_IDLE_TIMEOUT:g} s")


def test_a_body_sent_a_byte_at_a_time_meets_the_total_deadline(service):
    start = time.monotonic()
    with connect(service.port) as sock:
        sock.sendall(head(service.path, len(ROW)))
        try:
            for byte in ROW:  # each byte within the idle bound, all of them past the total one
                sock.sendall(bytes([byte]))
                time.sleep(BODY_IDLE_TIMEOUT / 3)
        except OSError:
            pass  # closed by the server after its 408, which is still there to read
        answer = read_until_closed(sock)
    assert time.monotonic() - start < BODY_TIMEOUT + SLACK
    assert_408(answer, f"request body not complete within {BODY_TIMEOUT:g} s")


def test_a_client_gone_mid_body_counts_499_at_info_and_is_no_server_error(service):
    before = request_counts(service.port, service.path)
    with connect(service.port) as sock:
        sock.sendall(head(service.path, len(ROW), "X-Request-ID: gone-mid-body\r\n") + ROW[:10])
        time.sleep(0.3)  # the app is reading the body
    with connect(service.port) as sock:  # gone before its answer: the answer is made, and counted, as usual
        sock.sendall(head(service.path, len(ROW)) + ROW)
    deadline = time.monotonic() + 10
    while request_counts(service.port, service.path).get("499", 0) == before.get("499", 0):
        assert time.monotonic() < deadline, request_counts(service.port, service.path)
        time.sleep(0.1)
    after = request_counts(service.port, service.path)
    assert after["499"] == before.get("499", 0) + 1
    assert after.get("500", 0) == before.get("500", 0) == 0
    logs = service.logs()
    assert "ERROR" not in logs and "Traceback" not in logs, logs
    line = f"INFO mlpatterns.serving.middleware [gone-mid-body]: POST {service.path} -> 499: "
    assert line + "the client closed the connection before its body was complete" in logs, logs
    assert served(service.port, service.path)


# Connections: only on the production stack (gunicorn's worker carries the header deadline and the cap).
@pytest.fixture(scope="module")
def web_single() -> int:
    with run_pattern(WEB_SINGLE, overrides={"web": {**BODY_LIMITS, **CONNECTION_LIMITS}}) as run:
        yield run.port("web")


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed the connection (what it sent before, a 408, is read and dropped)."""
    try:
        while sock.recv(65536, socket.MSG_DONTWAIT):
            pass
        return True
    except BlockingIOError:
        return False  # open, with nothing to read
    except OSError:
        return True  # reset


def test_200_slow_connections_are_let_go_and_a_normal_client_is_served_meanwhile(web_single):
    """A hundred send a header byte every second (slowloris), a hundred a body byte every second: the header
    deadline closes the first, the body deadline answers the second 408 and closes them."""
    socks = []
    try:
        for n in range(200):
            sock = connect(web_single, timeout=5)
            if n % 2:
                sock.sendall(head("/predict", 1000))  # then a body byte a second
            else:
                sock.sendall(b"POST /predict HTTP/1.1\r\n")  # then a header byte a second
            socks.append(sock)
        start, normal = time.monotonic(), []
        while time.monotonic() - start < max(HEADER_TIMEOUT, BODY_TIMEOUT) + SLACK:
            for n, sock in enumerate(socks):
                try:
                    sock.sendall(b"1" if n % 2 else b"X")
                except OSError:
                    pass  # closed by the server
            normal.append(served(web_single, "/predict"))
            time.sleep(1)
        left_open = sum(not closed_by_server(sock) for sock in socks)
        assert left_open == 0, f"{left_open} of 200 slow connections still open"
        assert all(normal) and len(normal) >= 4
    finally:
        for sock in socks:
            sock.close()


def test_an_idle_connection_is_closed_after_the_header_deadline_or_the_keep_alive(web_single):
    with connect(web_single) as fresh, connect(web_single) as reused:
        reused.sendall(head("/predict", len(ROW)) + ROW)
        assert read_response(reused).startswith(b"HTTP/1.1 200 OK")
        start = time.monotonic()
        assert read_until_closed(reused) == b""
        assert KEEPALIVE - 0.5 < time.monotonic() - start < KEEPALIVE + SLACK
        assert read_until_closed(fresh) == b""
        assert time.monotonic() - start < HEADER_TIMEOUT + SLACK


def test_connections_over_the_per_worker_cap_get_503_and_the_service_recovers():
    with run_pattern(WEB_SINGLE, overrides={"web": {"WORKER_CONNECTIONS": "20"}}) as run:
        port = run.port("web")
        idle = [connect(port) for _ in range(100)]  # the kernel spreads them over both workers: ~50 each
        try:
            time.sleep(0.5)
            refused = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
            assert refused.status_code == 503 and refused.text == "Service Unavailable"
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + 10
        while httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
