"""Two small services the client and middleware tests start as real processes (`serve(...)` runs one under
uvicorn).

`create_upstream_app`: answers 200, 500, 404, slowly, not in JSON, 503 for the first N calls, sets a cookie, and
echoes the request id and the cookie it received. `create_caller_app`: a service built with `upstreams=`, relaying
to the first one (UPSTREAM_URL) and to a dead one (DEAD_URL).
"""

import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from mlpatterns.logging import request_id
from mlpatterns.runner.backing import free_port
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import HttpServiceSettings

logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).parents[2]


def create_upstream_app() -> FastAPI:
    calls: Counter[str] = Counter()  # calls by key, for the routes that fail at first

    def add_routes(router: APIRouter) -> None:
        @router.get("/health")
        async def health():
            return {"health": "ok"}

        @router.get("/ok")
        async def ok():
            return {"ok": True}

        @router.get("/fail")
        async def fail():
            return JSONResponse({"detail": "the model exploded"}, status_code=500)

        @router.get("/missing")
        async def missing():
            return JSONResponse({"detail": "no such model"}, status_code=404)

        @router.api_route("/slow", methods=["GET", "POST"])
        async def slow(seconds: float):
            await asyncio.sleep(seconds)
            return {"ok": True}

        @router.get("/notjson")
        async def not_json():
            return PlainTextResponse("hello")

        @router.api_route("/flaky/{key}", methods=["GET", "POST"])
        async def flaky(key: str, failures: int):
            calls[key] += 1
            if calls[key] <= failures:
                return JSONResponse({"detail": "warming up"}, status_code=503)
            return {"calls": calls[key]}

        @router.get("/calls/{key}")
        async def calls_of(key: str):
            return {"calls": calls[key]}

        @router.get("/echo")
        async def echo(request: Request):
            logger.info("echo: the context's request id is %s", request_id.get())
            return {"request_id": request.headers.get("x-request-id")}

        @router.post("/echo")
        async def echo_body(body: dict):
            return body

        @router.get("/cookie/set")
        async def set_cookie():
            response = JSONResponse({"set": True})
            response.set_cookie("session", "alice")
            return response

        @router.get("/cookie")
        async def cookie(request: Request):
            return {"cookie": request.headers.get("cookie")}

        @router.post("/received")
        async def received(request: Request):
            return {"content-type": request.headers.get("content-type"), "body": (await request.body()).decode()}

    return create_service_app(HttpServiceSettings(), add_routes)


def create_caller_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield {"lifespan_ran": True}  # the service's own lifespan, composed with the client's

    def add_routes(router: APIRouter) -> None:
        @router.get("/health")
        async def health():
            return {"health": "ok"}

        @router.get("/relay")
        async def relay(request: Request):
            logger.info("relay: calling upstream")
            answer = await request.app.state.upstreams["upstream"].get("/echo")
            return {**answer, "lifespan_ran": request.state.lifespan_ran}

        @router.get("/relay/dead")
        async def relay_dead(request: Request):
            return await request.app.state.upstreams["prediction"].get("/predict")

    upstreams = {"upstream": os.environ["UPSTREAM_URL"], "prediction": os.environ["DEAD_URL"]}
    return create_service_app(HttpServiceSettings(), add_routes, upstreams=upstreams, lifespan=lifespan)


class Server:
    """A service started by `serve`: its URL and what it wrote to stdout and stderr so far."""

    def __init__(self, port: int, log):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = log

    def logs(self) -> str:
        # pread leaves the file offset, which the server's process shares, where it is.
        return os.pread(self._log.fileno(), os.fstat(self._log.fileno()).st_size, 0).decode(errors="replace")


@contextmanager
def serve(factory: str, *uvicorn_options: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Run `upstream_apps:<factory>` under uvicorn on a free port until the block ends (stopped by its pid)."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", f"mlpatterns.tests.upstream_apps:{factory}"]
            + ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", *uvicorn_options],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server(port, log)
        try:
            _wait_healthy(server, process)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_healthy(server: Server, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.logs()}")
        try:
            if httpx.get(server.url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not become healthy in {timeout} s:\n{server.logs()}")
