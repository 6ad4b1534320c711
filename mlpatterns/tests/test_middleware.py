"""The request id middleware and its log lines (in process), and the 413 a client can read (real servers)."""

import asyncio
import json
import logging
import re
import socket
import time
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Path
from pydantic import BaseModel

from mlpatterns.logging import request_id
from mlpatterns.runner import run_pattern
from mlpatterns.serving.app import add_post_routes, json_response
from mlpatterns.serving.middleware import DRAIN_IDLE_SECONDS, DRAIN_MAX_BYTES, read_body
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import HttpServiceSettings
from mlpatterns.tests.upstream_apps import serve

logger = logging.getLogger("test_middleware")


def add_routes(router: APIRouter) -> None:
    @router.get("/id")
    async def the_request_id():
        logger.info("handling")
        return {"request_id": request_id.get()}


def get_id(app, headers=None) -> httpx.Response:
    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            return await client.get("/id", headers=headers)

    return asyncio.run(main())


def test_a_request_without_an_id_gets_one_in_its_context_and_answer():
    response = get_id(create_service_app(HttpServiceSettings(), add_routes))
    rid = response.headers["x-request-id"]
    assert re.fullmatch("[0-9a-f]{32}", rid)
    assert response.json() == {"request_id": rid}
    assert get_id(create_service_app(HttpServiceSettings(), add_routes)).headers["x-request-id"] != rid


def test_the_callers_id_is_kept_when_sane_and_replaced_when_not():
    app = create_service_app(HttpServiceSettings(), add_routes)
    for sane in ["abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "x" * 128, "trace:1/2@host"]:
        response = get_id(app, {"X-Request-ID": sane})
        assert response.headers["x-request-id"] == sane
        assert response.json() == {"request_id": sane}
    for insane in ["x" * 129, "with space", "caf\u00e9".encode()]:
        response = get_id(app, {"X-Request-ID": insane})
        assert re.fullmatch("[0-9a-f]{32}", response.headers["x-request-id"])
        assert response.json() == {"request_id": response.headers["x-request-id"]}


def test_text_log_lines_show_the_request_id(capsys):
    app = create_service_app(HttpServiceSettings(), add_routes)  # its logging writes to this test's stdout
    get_id(app, {"X-Request-ID": "rid-text"})
    logger.info("outside any request")
    lines = capsys.readouterr().out.splitlines()
    assert any(line.endswith("INFO test_middleware [rid-text]: handling") for line in lines), lines
    assert any(line.endswith("INFO test_middleware [-]: outside any request") for line in lines), lines


def test_an_unhandled_error_is_logged_with_the_request_id(capsys):
    """The server prints a 500's traceback after the request's context is gone; our line carries the id."""

    def add_failing_route(router: APIRouter) -> None:
        @router.get("/boom")
        async def boom():
            raise RuntimeError("the model file vanished")

    app = create_service_app(HttpServiceSettings(), add_failing_route)

    async def main():
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/boom", headers={"X-Request-ID": "rid-boom"})

    assert asyncio.run(main()).status_code == 500
    lines = capsys.readouterr().out.splitlines()
    expected = "ERROR mlpatterns.serving.middleware [rid-boom]: unhandled RuntimeError answering GET /boom: the model"
    assert any(expected in line for line in lines), lines


def test_json_log_lines_have_a_request_id_field(capsys):
    app = create_service_app(HttpServiceSettings(log_json=True), add_routes)
    get_id(app, {"X-Request-ID": "rid-json"})
    logger.info("outside any request")
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_message = {entry["message"]: entry for entry in entries if entry["logger"] == "test_middleware"}
    assert by_message["handling"]["request_id"] == "rid-json"
    assert by_message["outside any request"]["request_id"] is None


class EchoLane:
    """A lane (create_service_app's `lanes`) that answers POST /lane with the request id and the body's size."""

    def __init__(self, app, service):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/lane":
            await self.app(scope, receive, send)
            return
        body, _ = await read_body(receive)
        answer = json.dumps({"request_id": request_id.get(), "size": len(body)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})


def test_a_lane_answers_ahead_of_the_router_inside_the_request_id_and_body_bounds():
    app = create_service_app(HttpServiceSettings(max_body_bytes=100), add_routes, lanes=[EchoLane])

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            return [
                await client.post("/lane", content=b"x" * 10, headers={"X-Request-ID": "rid-lane"}),
                await client.post("/lane", content=b"x" * 101),
                await client.get("/id", headers={"X-Request-ID": "rid-router"}),
            ]

    answered, refused, routed = asyncio.run(main())
    assert answered.json() == {"request_id": "rid-lane", "size": 10}
    assert answered.headers["x-request-id"] == "rid-lane"
    assert refused.status_code == 413  # bounded before the lane reads it
    assert routed.json() == {"request_id": "rid-router"}  # what the lane passes on reaches the routes


class Item(BaseModel):
    value: int


ItemId = Annotated[str, Path(pattern=r"^[a-z]+$")]


def add_item_routes(router: APIRouter) -> None:
    @router.post("/items/special")  # a route of the standard way, ahead of the lane's
    async def special(item: Item):
        return {"special": item.value}

    async def item(item_id: ItemId, item: Item):
        return json_response({"item_id": item_id, "value": item.value})

    async def fixed(item: Item):  # after /items/{item_id}, which the router chooses for /items/fixed
        return json_response({"fixed": item.value})

    add_post_routes(router, [("/items/{item_id}", item, None), ("/items/fixed", fixed, None)])


def test_the_fast_lane_takes_a_routes_path_parameters_where_the_router_would_choose_the_route(monkeypatch):
    app = create_service_app(HttpServiceSettings(), add_item_routes)
    lane_routes = [route for route in app.router.routes if hasattr(route, "answer")]
    answered = []
    for route in lane_routes:
        answer = route.answer
        monkeypatch.setattr(route, "answer", lambda b, p, a=answer, r=route: answered.append((r.path, p)) or a(b, p))

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            paths = ["/items/abc", "/items/special", "/items/fixed", "/items/ABC", "/metrics"]
            return [await client.post(path, json={"value": 7}) for path in paths[:4]] + [await client.get(paths[4])]

    by_lane, special, fixed, refused, metrics = asyncio.run(main())
    assert by_lane.json() == {"item_id": "abc", "value": 7}
    assert special.json() == {"special": 7}  # the router's choice, not the lane's /items/{item_id}
    assert fixed.json() == {"item_id": "fixed", "value": 7}  # as the router chooses: the route declared first
    assert refused.status_code == 422  # a path parameter its annotation refuses: the standard way's answer
    assert refused.json()["detail"][0]["loc"] == ["path", "item_id"]
    # Asked: the route the router chooses, with its parameters (/items/ABC too, its parameter refused then).
    assert answered == [("/items/{item_id}", {"item_id": item_id}) for item_id in ("abc", "fixed", "ABC")]
    assert 'http_requests_total{method="POST",path="/items/{item_id}",status="200"} 2.0' in metrics.text


def test_the_fast_lane_never_runs_an_endpoint_twice_when_it_fails_with_a_validation_error():
    calls = []

    async def failing(item: Item):  # a pydantic error of the endpoint's own, not the request's
        calls.append(item.value)
        return json_response(Item.model_validate({"value": "not a number"}).model_dump())

    app = create_service_app(HttpServiceSettings(), lambda router: add_post_routes(router, [("/fail", failing, None)]))

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            return await client.post("/fail", json={"value": 7})

    assert asyncio.run(main()).status_code == 422  # the app's handler of a pydantic error
    assert calls == [7]  # run once, its error answered, not taken for a bad body and run again


# The 413 a client can read: both servers the project runs, uvicorn's httptools protocol (web single under
# gunicorn, as `make up` starts it) and its h11 protocol, refusing bodies over the default 1 MiB limit.
@pytest.fixture(scope="module", params=["httptools", "h11"])
def server(request) -> tuple[int, str]:
    """(port, the path of a POST route taking JSON)."""
    if request.param == "httptools":
        with run_pattern("chapter4_serving_patterns/web_single_pattern") as run:
            yield run.port("web"), "/predict"
    else:
        with serve("create_upstream_app", "--http", "h11") as upstream:
            yield upstream.port, "/echo"


def send_body(
    port: int, path: str, size: int, chunked: bool, stop_after: int | None = None, headers: str = ""
) -> tuple[bytes, int]:
    """POST `size` bytes as a client does, the whole body before reading (or only `stop_after` of them), then
    read the answer until the server closes. Returns (what was read, bytes sent); a reset raises."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    with sock:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode())
        sock.sendall(f"{framing}\r\n{headers}\r\n".encode())
        chunk, sent = b"1" * 65536, 0
        while sent < (size if stop_after is None else stop_after):
            part = chunk[: size - sent]
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            sent += len(part)
        if chunked and stop_after is None:
            sock.sendall(b"0\r\n\r\n")
        answer = b""
        while data := sock.recv(65536):
            answer += data
        return answer, sent


def parse(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    assert len(body) == int(headers["content-length"]), "the body is complete and nothing follows it"
    return status, headers, body


def assert_413(answer: bytes) -> None:
    status, headers, body = parse(answer)
    assert status == "HTTP/1.1 413 Request Entity Too Large"
    assert headers["connection"] == "close"
    assert json.loads(body) == {"detail": "request body is larger than 1048576 bytes"}


# `Connection: close` is what urllib sends: the server then used to close at once, with the body unread.
@pytest.mark.parametrize("connection", ["keep-alive", "close"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("size", [2_000_000, 40_000_000])
def test_an_oversized_body_gets_a_complete_413_and_no_reset(server, size, chunked, connection):
    port, path = server
    answer, sent = send_body(port, path, size, chunked, headers=f"Connection: {connection}\r\n")
    assert sent == size
    assert_413(answer)
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200


def test_a_client_that_stops_sending_is_answered_and_let_go(server):
    port, path = server
    start = time.monotonic()
    answer, _ = send_body(port, path, 40_000_000, chunked=False, stop_after=2_000_000)
    assert_413(answer)
    assert time.monotonic() - start < DRAIN_IDLE_SECONDS + 2


def test_a_client_waiting_for_100_continue_gets_the_413_instead(server):
    port, path = server
    answer, sent = send_body(port, path, 40_000_000, chunked=False, stop_after=0, headers="Expect: 100-continue\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")  # no `100 Continue` first: the client need not send the body
    assert_413(answer)


def test_a_body_past_the_drain_bound_is_cut_off_and_the_server_keeps_serving(server):
    port, path = server
    size = DRAIN_MAX_BYTES + 32 * 1024 * 1024
    start = time.monotonic()
    try:
        send_body(port, path, size, chunked=True)
    except OSError:
        pass  # the server stopped reading and closed: a reset is what a client past the bound may see
    assert time.monotonic() - start < 30
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    small = httpx.post(f"http://127.0.0.1:{port}{path}", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
    assert small.status_code == 200
