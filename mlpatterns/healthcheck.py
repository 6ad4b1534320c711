"""`python -m mlpatterns.healthcheck /health`: exit 0 when this service's /health answers 2xx.

A path is asked of `http://127.0.0.1:$PORT` (PORT defaults to 8000), so the same check follows the port a
container, the local runner or Kubernetes starts the service on; a full URL is asked as it is. Used by the
Dockerfiles' HEALTHCHECK, the compose healthchecks and the local runner alike; slim images carry no curl,
every image carries Python.

`python -m mlpatterns.healthcheck heartbeat`: exit 0 when the file at HEARTBEAT_PATH was touched within
HEARTBEAT_MAX_AGE_SECONDS (default 60). A queue worker listens on no port; `run_worker` touches this file after
every wait for a job and every job (its `heartbeat_path` setting), so the check fails for a worker that is dead,
has not joined its queue yet, or is stuck in one job longer than the maximum age.
"""

import os
import sys
import time
import urllib.error
import urllib.request


def check_url(target: str, environ=os.environ) -> str:
    """The URL to ask: `target` itself if it is a URL, else `target` on 127.0.0.1 at the PORT setting."""
    if target.startswith(("http://", "https://")):
        return target
    if not target.startswith("/"):
        raise ValueError(f"expected a path (/health) or a URL, got {target!r}")
    return f"http://127.0.0.1:{environ.get('PORT') or 8000}{target}"


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def heartbeat_fresh(environ=os.environ, now: float | None = None) -> bool:
    """The heartbeat file named by HEARTBEAT_PATH exists and is younger than HEARTBEAT_MAX_AGE_SECONDS."""
    path = environ.get("HEARTBEAT_PATH")
    if not path:
        raise ValueError("HEARTBEAT_PATH is not set: which file does the worker touch?")
    max_age = float(environ.get("HEARTBEAT_MAX_AGE_SECONDS") or 60)
    try:
        touched = os.stat(path).st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - touched <= max_age


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(
            "usage: python -m mlpatterns.healthcheck PATH|URL|heartbeat   (PATH is asked on 127.0.0.1:$PORT; "
            "heartbeat checks the age of the file at $HEARTBEAT_PATH)"
        )
    if sys.argv[1] == "heartbeat":
        try:
            sys.exit(0 if heartbeat_fresh() else 1)
        except ValueError as error:
            sys.exit(str(error))
    try:
        url = check_url(sys.argv[1])
    except ValueError as error:
        sys.exit(str(error))
    sys.exit(0 if healthy(url) else 1)
