"""Pure ASGI middleware: cheaper per request than Starlette's BaseHTTPMiddleware."""

import asyncio
import re
import time
from random import getrandbits

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlpatterns import metrics
from mlpatterns.errors import PayloadTooLarge
from mlpatterns.logging import request_id

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


# A caller's request id is kept when it is printable ASCII without spaces, at most 128 characters; anything else
# (a megabyte, control characters that would forge log lines) is replaced by a fresh id.
_SANE_REQUEST_ID = re.compile(rb"[!-~]{1,128}").fullmatch


class RequestIdMiddleware:
    """Give every request an id: the caller's `X-Request-ID` when it is sane, else a new one. It is set in the
    `request_id` context variable while the request is handled (log lines and calls to other services carry it)
    and returned in the response's `X-Request-ID`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _SANE_REQUEST_ID(value):
                    rid = value.decode()
                break
        if rid is None:
            # As unique as uuid4().hex at a tenth of its cost: an id is no secret, so `random` serves (the
            # random module reseeds itself in every forked worker).
            rid = getrandbits(128).to_bytes(16).hex()
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


# How much of a refused body is read and thrown away, as nginx's lingering close does: a server that closes a
# socket with unread data makes the kernel send a reset, and most clients then report "connection reset" and
# never show the 413 that was already sent. Bounded, so a refused client cannot keep a worker reading forever.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0  # in all
DRAIN_IDLE_SECONDS = 2.0  # between two reads (a client that waits for `100 Continue` sends nothing)


class BodySizeLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413, by Content-Length up front or by counting a streamed body.

    The 413 is sent at once, then the rest of the body is read and discarded (up to the DRAIN_* bounds) before
    the response is finished and the connection closed, so the client reads the 413 instead of a reset.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        drain_max_bytes: int = DRAIN_MAX_BYTES,
        drain_seconds: float = DRAIN_SECONDS,
        drain_idle_seconds: float = DRAIN_IDLE_SECONDS,
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.drain_max_bytes = drain_max_bytes
        self.drain_seconds = drain_seconds
        self.drain_idle_seconds = drain_idle_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                if int(value) > self.max_bytes:
                    await self._refuse(receive, send)
                    return
                # The server never reads past Content-Length, so a declared size is the whole check.
                await self.app(scope, receive, send)
                return
        # A streamed (chunked) body: count it, and once over the limit answer 413 in place of whatever the
        # app makes of the interrupted read (FastAPI turns any body-read error into a 400).
        received = 0
        exceeded = False
        started = False
        body_read = False  # the message that passed the limit was the body's last

        async def counting_receive() -> Message:
            nonlocal received, exceeded, body_read
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                exceeded = True
                body_read = not message.get("more_body", False)
                raise PayloadTooLarge(self._detail())
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if not exceeded:
                started = True
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(receive, send, drain=not body_read)

    def _detail(self) -> str:
        return f"request body is larger than {self.max_bytes} bytes"

    async def _refuse(self, receive: Receive, send: Send, drain: bool = True) -> None:
        body = orjson.dumps({"detail": self._detail()})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        # The whole answer goes out first (a client reading while it sends can stop early), but the response is
        # finished only after the drain: once it is, the server's receive() answers nothing but a disconnect.
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        if drain:
            await self._drain(receive)
        await send({"type": "http.response.body", "body": b""})

    async def _drain(self, receive: Receive) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_seconds
        drained = 0
        while drained <= self.drain_max_bytes:
            wait = min(self.drain_idle_seconds, deadline - loop.time())
            if wait <= 0:
                return
            try:
                async with asyncio.timeout(wait):
                    message = await receive()
            except TimeoutError:
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                return  # all read, or the client went away
            drained += len(message.get("body", b""))
