"""The circuit breaker live: closed (real answers from the three backends in turn), open (every connection the
DestinationRule allows is held and as many requests wait: the next one gets the fallback at once), closed again.

The overload is made with the compose numbers themselves: slow clients that send their request's headers and only
part of its body hold a backend connection each for as long as they like (HAProxy forwards a request once its
headers are in, as Envoy does), the way slow uploads exhaust a real service's connection pool.
"""

import socket
import time
from pathlib import Path

import yaml

from mlpatterns.demo import DemoClient, ServiceClient

SETOSA = [5.1, 3.5, 1.4, 0.2]
REAL = {"prediction": ["setosa"]}
FALLBACK = {"prediction": [[1 / 3, 1 / 3, 1 / 3]], "fallback": True}  # each species' share of the training set
FALLBACK_LABEL = {"prediction": [None], "fallback": True}
BODY = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'
HELD_PART = 10  # bytes of the body a slow client sends before it stops


def demo(client: DemoClient) -> None:
    breaker = client.service("breaker")
    limits = breaker.client.http.get(breaker.base_url + "/proxy/metrics").text
    connections = int(metric(limits, "haproxy_server_limit_sessions", "a"))
    pending = pending_limit()
    print(f"\n  the breaker allows {connections} connections per backend and {pending} waiting requests")

    # Closed: real answers, round robin over the three backends.
    for _ in range(3):
        show(breaker, breaker.post("/predict/label", {"data": [SETOSA]}, answer=REAL))
    breaker.get("/health")

    # Open: 3 x connections requests hold every backend connection, `pending` more wait for one.
    held = [hold(breaker.base_url) for _ in range(3 * connections + pending)]
    wait_for(breaker, lambda text: metric(text, "haproxy_backend_current_queue", None) >= pending)
    print(f"\n  {len(held)} slow clients: every backend connection is taken and {pending} requests wait")
    for _ in range(3):
        show(breaker, breaker.post("/predict", {"data": [SETOSA]}, answer=FALLBACK))
    show(breaker, breaker.post("/predict/label", {"data": [SETOSA]}, answer=FALLBACK_LABEL))

    # Closed again: the slow clients finish their requests and are answered; new requests get real answers.
    answers = [finish(sock) for sock in held]
    real = sum(status == 200 and b"fallback" not in body for status, body in answers)
    fallback = sum(status == 200 and b"fallback" in body for status, body in answers)
    print(f"\n  the slow clients finished their requests: {real} real answers, {fallback} fallbacks (waited too long)")
    for _ in range(3):
        show(breaker, breaker.post("/predict/label", {"data": [SETOSA]}, answer=REAL))
    # Bad input is still the backends' clear 4xx, never a fallback.
    breaker.post("/predict", {"data": [[5.1, 3.5, 1.4]]}, expect=422)


def show(breaker: ServiceClient, response) -> None:
    served = response.headers.get("x-served-by")
    why = f"served by {served}" if served else f"fallback ({response.headers['x-fallback']})"
    print(f"     {why} in {response.elapsed.total_seconds() * 1000:.1f} ms")


def hold(base_url: str) -> socket.socket:
    """A request whose headers are sent and whose body is not all sent: it holds a backend connection."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}"
    sock.sendall(head.encode() + b"\r\n\r\n" + BODY[:HELD_PART])
    return sock


def finish(sock: socket.socket) -> tuple[int, bytes]:
    """Send the rest of the body; the answer's status and body (a small answer: one read is enough)."""
    with sock:
        sock.sendall(BODY[HELD_PART:])
        sock.settimeout(30)
        head, _, body = sock.recv(4096).partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body


def metric(exposition: str, name: str, server: str | None) -> float:
    label = f'proxy="iris",server="{server}"' if server else 'proxy="iris"'
    return sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines() if line.startswith(f"{name}{{{label}"))


def pending_limit() -> int:
    """The breaker's pending limit (an ACL, not in its metrics): the compose file's MAX_PENDING_REQUESTS."""
    services = yaml.safe_load((Path(__file__).parent / "docker-compose.yml").read_text())["services"]
    return int(services["breaker"]["environment"]["MAX_PENDING_REQUESTS"])


def wait_for(breaker: ServiceClient, condition, timeout: float = 30.0) -> None:
    """Until the breaker's metrics satisfy `condition`."""
    deadline = time.monotonic() + timeout
    while not condition(breaker.client.http.get(breaker.base_url + "/proxy/metrics").text):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the breaker's metrics did not get there within {timeout:.0f} s")
        time.sleep(0.1)
