"""Pure ASGI middleware: cheaper per request than Starlette's BaseHTTPMiddleware."""

import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlpatterns import metrics
from mlpatterns.errors import PayloadTooLarge

REQUESTS = metrics.counter("http_requests_total", "HTTP requests answered", ["method", "path", "status"])
LATENCY = metrics.histogram(
    "http_request_duration_seconds", "Time from request to the last byte of the response", ["method", "path"]
)


# Probes and scrapes would drown the figures that matter (model_db's probe is /v0.1/health).
def unmeasured(path: str) -> bool:
    return path.endswith("/health") or path == "/metrics"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app
        # labels() costs about as much as the increment itself, so each label set's children are kept here (as
        # prometheus_client keeps them anyway): (method, path, status) -> (request counter, latency histogram).
        self._children: dict[tuple[str, str, int], tuple] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or unmeasured(scope["path"]):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # The route template (not the raw path) keeps label cardinality bounded.
            key = (scope["method"], getattr(scope.get("route"), "path", "unmatched"), status)
            if key not in self._children:
                method, path, _ = key
                self._children[key] = (REQUESTS.labels(method, path, str(status)), LATENCY.labels(method, path))
            requests, latency = self._children[key]
            requests.inc()
            latency.observe(time.perf_counter() - start)


class BodySizeLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413, by Content-Length up front or by counting a streamed body."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                if int(value) > self.max_bytes:
                    await self._refuse(send)
                    return
                # The server never reads past Content-Length, so a declared size is the whole check.
                await self.app(scope, receive, send)
                return
        # A streamed (chunked) body: count it, and once over the limit answer 413 in place of whatever the
        # app makes of the interrupted read (FastAPI turns any body-read error into a 400).
        received = 0
        exceeded = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                exceeded = True
                raise PayloadTooLarge(self._detail())
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._refuse(send)

        await self.app(scope, counting_receive, guarded_send)

    def _detail(self) -> str:
        return f"request body is larger than {self.max_bytes} bytes"

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps({"detail": self._detail()})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
