"""Pure ASGI middleware: cheaper per request than Starlette's BaseHTTPMiddleware."""

import asyncio
import logging
import re
import time
from random import getrandbits

import orjson
from starlette.requests import Request
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlpatterns import metrics
from mlpatterns.errors import PayloadTooLarge
from mlpatterns.logging import request_id

logger = logging.getLogger(__name__)

# A scope key an inner layer sets when it leaves a request unanswered on purpose (the client is gone): the status
# to count for it, instead of the 500 of an app that failed before answering.
UNANSWERED_STATUS = "mlpatterns.unanswered_status"

REQUESTS = metrics.counter("http_requests_total", "HTTP requests answered", ["method", "path", "status"])
LATENCY = metrics.histogram(
    "http_request_duration_seconds", "Time from request to the last byte of the response", ["method", "path"]
)


# Probes and scrapes would drown the figures that matter (model_db's probe is /v0.1/health).
def unmeasured(path: str) -> bool:
    return path.endswith("/health") or path == "/metrics"


# A caller's request id is kept when it is printable ASCII without spaces, at most 128 characters; anything else
# (a megabyte, control characters that would forge log lines) is replaced by a fresh id.
_SANE_REQUEST_ID = re.compile(rb"[!-~]{1,128}").fullmatch


class RequestMiddleware:
    """What every request gets, in one layer (each pure ASGI layer and its send wrapper cost a few us a request):

    - an id: the caller's `X-Request-ID` when it is sane, else a new one. It is set in the `request_id` context
      variable while the request is handled (log lines and calls to other services carry it) and returned in the
      response's `X-Request-ID`;
    - HTTP metrics (`http_requests_total`, `http_request_duration_seconds`), except for probes and scrapes."""

    def __init__(self, app: ASGIApp):
        self.app = app
        # labels() costs about as much as the increment itself, so each label set's children are kept here (as
        # prometheus_client keeps them anyway): (method, path, status) -> (request counter, latency histogram).
        self._children: dict[tuple[str, str, int], tuple] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
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
        status = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            # The server logs the traceback of a 500 after we return, with no id: this line ties the two.
            logger.error(
                "unhandled %s answering %s %s: %s", type(error).__name__, scope["method"], scope["path"], error
            )
            raise
        finally:
            request_id.reset(token)
            if not unmeasured(scope["path"]):
                if status is None:
                    status = scope.get(UNANSWERED_STATUS, 500)
                self._count(scope, status, time.perf_counter() - start)

    def _count(self, scope: Scope, status: int, seconds: float) -> None:
        # The route template (not the raw path) keeps label cardinality bounded.
        key = (scope["method"], getattr(scope.get("route"), "path", "unmatched"), status)
        children = self._children.get(key)
        if children is None:
            method, path, _ = key
            children = self._children[key] = (
                metrics.deferred(REQUESTS.labels(method, path, str(status))),
                metrics.deferred(LATENCY.labels(method, path)),
            )
        requests, latency = children
        requests.inc()
        latency.observe(seconds)


class FastLane:
    """The busy POST routes of a service, answered ahead of the router.

    A route that offers `answer(body, path_params) -> Response | None` (PredictRequestRoute: validate a JSON body
    and the path's parameters, call the endpoint; the open inference protocol's infer route) is answered here
    when the request is `POST <its path>`, where the router would choose it too, with `Content-Type:
    application/json` (any content type where the route's `json_only` is False). It skips what FastAPI does for
    any request: matching the path against every route in turn (the docs' routes come first), a Request object,
    two exception-handling wrappers and an AsyncExitStack. For one iris row that machinery costs more than the
    model call. The lane sits inside the request id, metrics and body bounds, so a request answered here is
    counted, bounded and logged as any other.

    A body that `answer` does not accept (it does not validate) goes the standard way, replayed, so its error
    reads exactly as before; an error the endpoint raises is answered by the app's own exception handlers."""

    def __init__(self, app: ASGIApp, service):
        self.app = app
        self.routes = {}  # path -> the lane's route of that path
        self.routes_with_parameters = []  # (route, the routes ahead of it that the router would try first)
        ahead = []  # the routes that may take a POST, in the router's order
        for route in service.router.routes:
            if hasattr(route, "answer") and route.methods == {"POST"}:
                if route.param_convertors:
                    self.routes_with_parameters.append((route, tuple(ahead)))
                elif not any(other.path_regex.match(route.path) for other in ahead):
                    self.routes[route.path] = route
            if isinstance(route, Mount) or (isinstance(route, Route) and "POST" in (route.methods or {"POST"})):
                ahead.append(route)
        self.handlers = service.exception_handlers

    def _match(self, path: str) -> tuple[Route | None, dict]:
        """The lane's route for a POST to `path` and the path's parameters; None where the router would choose
        another route."""
        route = self.routes.get(path)
        if route is not None:
            return route, {}
        for route, ahead in self.routes_with_parameters:
            match = route.path_regex.match(path)
            if match:
                if any(other.path_regex.match(path) for other in ahead):
                    return None, {}
                return route, {name: route.param_convertors[name].convert(v) for name, v in match.groupdict().items()}
        return None, {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route, path_params = (
            self._match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else (None, {})
        )
        if route is None or (route.json_only and not _is_json(scope["headers"])):
            await self.app(scope, receive, send)
            return
        body, complete = await read_body(receive)
        if complete:
            try:
                response = await route.answer(body, path_params)
            except Exception as error:
                response = await handled(self.handlers, scope, error)
            if response is not None:
                scope["route"] = route  # what the router would have set: the metrics' path label
                await response(scope, receive, send)
                return
        read = {"type": "http.request", "body": body, "more_body": False} if complete else {"type": "http.disconnect"}
        await self.app(scope, _replay(read, receive), send)


async def handled(handlers: dict, scope: Scope, error: Exception):
    """The answer of the app's exception `handlers` to `error`, for a layer ahead of the router (re-raised when
    none handles it). As Starlette's ExceptionMiddleware looks a handler up: by the error's class, then its bases."""
    for kind in type(error).__mro__:
        handler = handlers.get(kind)
        if handler is not None:
            return await handler(Request(scope), error)
    raise error


def _is_json(headers) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value == b"application/json"
    return False


async def read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request's body and whether all of it came (False: the client went away first)."""
    message = await receive()
    if message["type"] != "http.request":
        return b"", False
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body, True  # the usual case: the body came with its headers
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(message: Message, then: Receive) -> Receive:
    """A receive that gives `message`, read already, first, then whatever `then` gives."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await then()
        replayed = True
        return message

    return replay


# How much of a refused body is read and thrown away, as nginx's lingering close does: a server that closes a
# socket with unread data makes the kernel send a reset, and most clients then report "connection reset" and
# never show the 413 that was already sent. Bounded, so a refused client cannot keep a worker reading forever.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0  # in all
DRAIN_IDLE_SECONDS = 2.0  # between two reads (a client that waits for `100 Continue` sends nothing)

# nginx's status for a client that closed its connection before it was answered. Never sent (no one is left to
# read it), only counted and logged, so that a client going away is not mistaken for a server error.
CLIENT_CLOSED_REQUEST = 499


class _BodyTimeout(Exception):
    pass


class _ReadDeadlines:
    """The deadlines of the body reads waiting on one event loop, checked by one task every `tick` seconds, which
    cancels an overdue read's task. A timer per read (asyncio.timeout) cost ~5 us a request, a few percent of web
    single's whole request, for a read that almost never waits: its body is there with its headers. A deadline
    is kept to within one tick."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float):
        self.loop = loop
        self.tick = tick
        self.reads: dict[asyncio.Task, float] = {}
        self.expired: set[asyncio.Task] = set()
        self.watcher: asyncio.Task | None = None

    def add(self, task: asyncio.Task, deadline: float) -> None:
        self.reads[task] = deadline
        if self.watcher is None:
            self.watcher = self.loop.create_task(self._watch())

    async def _watch(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.tick)  # sleeping first: under load one watcher lives on, not one a read
                if not self.reads:
                    return
                now = self.loop.time()
                for task in [task for task, deadline in self.reads.items() if deadline <= now]:
                    del self.reads[task]
                    self.expired.add(task)
                    task.cancel()
        finally:
            self.watcher = None


class RequestBodyMiddleware:
    """Bound a request body in size and in time, and tell a client that went away from a server error.

    - Over `max_bytes`: 413, by Content-Length up front or by counting a streamed body. The 413 is sent at once,
      then the rest of the body is read and discarded (up to the DRAIN_* bounds) before the response is finished
      and the connection closed, so the client reads the 413 instead of a reset.
    - Not all there within `timeout_seconds` of the first read, or nothing new for `idle_timeout_seconds`: 408
      with `Connection: close`. The server waits for a body as long as its client likes (a body shorter than its
      Content-Length, or a byte every few seconds, held a connection and a request task until the client gave
      up); the total bound stops a slow drip that the idle bound alone would let through, and the idle bound
      frees a stalled upload long before the total one.
    - The client closes its connection before its body is complete: counted as 499 and logged at INFO in one
      line, instead of the traceback and the 500 that the app's ClientDisconnect used to make.

    Requests without a body (no Content-Length nor Transfer-Encoding) pass straight through.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_seconds: float = 30.0,
        idle_timeout_seconds: float = 10.0,
        drain_max_bytes: int = DRAIN_MAX_BYTES,
        drain_seconds: float = DRAIN_SECONDS,
        drain_idle_seconds: float = DRAIN_IDLE_SECONDS,
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds
        self.idle_timeout_seconds = idle_timeout_seconds
        self.drain_max_bytes = drain_max_bytes
        self.drain_seconds = drain_seconds
        self.drain_idle_seconds = drain_idle_seconds
        self._deadlines: _ReadDeadlines | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = int(value) if value.isdigit() else -1
                break
            if name == b"transfer-encoding":
                declared = -1
                break
        if declared is None or declared == 0:
            await self.app(scope, receive, send)  # no body to wait for
            return
        if declared > self.max_bytes:
            await self._refuse(receive, send)
            return

        loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not loop:
            deadlines = self._deadlines = _ReadDeadlines(loop, min(1.0, self.idle_timeout_seconds / 4))
        deadline = None  # the total bound, from the first read
        count = declared < 0  # the server never reads past a Content-Length, so only a streamed body is counted
        received = 0
        body_done = False
        outcome = None  # the status that replaces the app's answer: 408, 413 or 499
        late = False  # a 408 for the total bound, not the idle one
        started = False

        async def bounded_receive() -> Message:
            nonlocal received, body_done, outcome, late, deadline
            if body_done:
                return await receive()  # after the body only a disconnect comes, whenever it comes
            now = loop.time()
            if deadline is None:
                deadline = now + self.timeout_seconds
            task = asyncio.current_task(loop)  # given the loop, asyncio skips a getpid() system call
            deadlines.add(task, min(deadline, now + self.idle_timeout_seconds))
            try:
                message = await receive()
            except asyncio.CancelledError:
                if task not in deadlines.expired:
                    raise
                deadlines.expired.discard(task)
                task.uncancel()
                outcome, late = 408, loop.time() >= deadline
                raise _BodyTimeout from None
            finally:
                deadlines.reads.pop(task, None)
            if message["type"] != "http.request":
                outcome = CLIENT_CLOSED_REQUEST
                return message  # the app raises ClientDisconnect, or answers a client that is gone
            body_done = not message.get("more_body", False)
            if count:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    outcome = 413
                    raise PayloadTooLarge(self._too_large())
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if outcome is None:
                started = True
                await send(message)

        # The first read is made here. The usual body comes whole with its headers: the app then gets it back,
        # and the connection's own receive and send, with nothing left to bound.
        try:
            first = await bounded_receive()
        except (_BodyTimeout, PayloadTooLarge):
            first = None
        if outcome is None and body_done:
            await self.app(scope, _replay(first, receive), send)
            return
        if outcome is None:
            try:
                await self.app(scope, _replay(first, bounded_receive), guarded_send)
            except Exception:
                if outcome is None:
                    raise
        if outcome is None or started:
            return  # an answer is out already: its status is the one counted
        where = f"{scope['method']} {scope['path']}"
        if outcome == 413:
            await self._refuse(receive, send, drain=not body_done)
        elif outcome == 408:
            detail = self._timed_out(late)
            logger.info("%s -> 408: %s", where, detail)
            await self._answer(send, 408, detail, more_body=False)
        else:
            logger.info("%s -> %d: the client closed the connection before its body was complete", where, outcome)
            scope[UNANSWERED_STATUS] = outcome

    def _too_large(self) -> str:
        return f"request body is larger than {self.max_bytes} bytes"

    def _timed_out(self, late: bool) -> str:
        if late:
            return f"request body not complete within {self.timeout_seconds:g} s"
        return f"request body stalled: nothing received for {self.idle_timeout_seconds:g} s"

    @staticmethod
    async def _answer(send: Send, status: int, detail: str, more_body: bool) -> None:
        body = orjson.dumps({"detail": detail})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": more_body})

    async def _refuse(self, receive: Receive, send: Send, drain: bool = True) -> None:
        # The whole answer goes out first (a client reading while it sends can stop early), but the response is
        # finished only after the drain: once it is, the server's receive() answers nothing but a disconnect.
        await self._answer(send, 413, self._too_large(), more_body=True)
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
