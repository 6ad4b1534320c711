"""The echo floor: the least a FastAPI JSON POST costs on the serving stack (gunicorn + uvicorn workers).

`create_echo_app()` is a plain FastAPI app whose one route parses the JSON body into a dict and returns it,
so FastAPI validates the body and serializes the answer as it does for any route. `echo_server()` runs it
under the same gunicorn config module, worker class and worker count as the pattern it is compared with.
"""

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from fastapi import FastAPI

from mlpatterns.runner.backing import free_port
from mlpatterns.runner.run import REPO_ROOT, _stop_group


def create_echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(body: dict):
        return body

    return app


@contextmanager
def echo_server(workers: str | None, timeout: float = 60.0) -> Iterator[str]:
    """Start the echo app on a free loopback port; yield its /echo URL; stop its process group on the way out."""
    port = free_port()
    env = dict(os.environ, HOST="127.0.0.1", PORT=str(port))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if workers:
        env["WORKERS"] = workers
    command = [sys.executable, "-m", "gunicorn", "--config", "python:mlpatterns.serving.gunicorn_conf",
               "mlpatterns.bench.echo:create_echo_app()"]
    url = f"http://127.0.0.1:{port}/echo"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own process group: the workers stop with it
        try:
            deadline = time.monotonic() + timeout
            while not _answers(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the echo server did not start:\n{log.read().decode(errors='replace')}")
                time.sleep(0.2)
            yield url
        finally:
            _stop_group(process)


def _answers(url: str) -> bool:
    try:
        return httpx.post(url, json={"ping": 1}, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
