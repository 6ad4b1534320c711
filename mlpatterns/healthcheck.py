"""`python -m mlpatterns.healthcheck /health`: exit 0 when this service's /health answers 2xx.

A path is asked of `http://127.0.0.1:$PORT` (PORT defaults to 8000), so the same check follows the port a
container, the local runner or Kubernetes starts the service on; a full URL is asked as it is. Used by the
Dockerfiles' HEALTHCHECK, the compose healthchecks and the local runner alike; slim images carry no curl,
every image carries Python.
"""

import os
import sys
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


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mlpatterns.healthcheck PATH|URL   (PATH is asked on 127.0.0.1:$PORT)")
    try:
        url = check_url(sys.argv[1])
    except ValueError as error:
        sys.exit(str(error))
    sys.exit(0 if healthy(url) else 1)
