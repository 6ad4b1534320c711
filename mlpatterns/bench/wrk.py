"""Drive HTTP load with wrk (Debian's package): one JSON POST, fixed connections, fixed duration."""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("post.lua")
INSTALL = ["apt-get update", "apt-get install -y wrk"]


class WrkMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    status_errors: int  # answers other than 2xx/3xx

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def ensure_wrk() -> str:
    """The wrk binary; installed with apt-get when we are root on Debian, else the exact command is the error."""
    if found := shutil.which("wrk"):
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"wrk is missing; installing it: {' && '.join(INSTALL)}", flush=True)
        try:
            for step in INSTALL:
                subprocess.run(step.split(), check=True, timeout=600)
        except subprocess.SubprocessError as error:
            print(f"installing wrk failed: {error}", flush=True)
        if found := shutil.which("wrk"):
            return found
    command = " && ".join(f"sudo {step}" for step in INSTALL)
    raise WrkMissing(f"wrk is not installed: run `{command}` (Debian/Ubuntu), then run the bench again")


def run_wrk(
    url: str,
    body: bytes,
    connections: int,
    seconds: float,
    threads: int = 1,
    delay_ms: int | None = None,
    headers: dict[str, str] | None = None,
) -> Load:
    """One wrk run against a loopback URL. One thread by default: on 2 cores the load tool must stay small.
    `delay_ms`: each connection pauses that long between its requests (the latency excludes the pause).
    `headers`: sent on every request besides the JSON content type (e.g. chapter 6's routing header)."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"{url}: the bench only loads loopback addresses")
    command = [
        ensure_wrk(),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "5s",
        "-s",
        str(SCRIPT),
        url,
    ]
    env = dict(os.environ, BENCH_BODY=body.decode())
    if delay_ms is not None:
        env["BENCH_DELAY_MS"] = str(delay_ms)
    if headers:
        if any("\n" in f"{name}{value}" or ":" in name for name, value in headers.items()):
            raise ValueError(f"{headers}: a header name holds no ':' and neither part a line break")
        env["BENCH_HEADERS"] = "\n".join(f"{name}: {value}" for name, value in headers.items())
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 30)
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({result.returncode}): {' '.join(command)}\n{result.stdout}{result.stderr}")
    figures = json.loads(lines[-1].removeprefix("BENCH "))
    return Load(
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        p50_ms=figures["p50_us"] / 1e3,
        p99_ms=figures["p99_us"] / 1e3,
        socket_errors=figures["socket_errors"],
        status_errors=figures["status_errors"],
    )
