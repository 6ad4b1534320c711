"""`python -m mlpatterns.healthcheck URL`: exit 0 when URL answers 2xx.

Used by compose healthchecks and the local runner alike; slim images carry no curl, every image carries Python.
"""

import sys
import urllib.error
import urllib.request


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mlpatterns.healthcheck URL")
    sys.exit(0 if healthy(sys.argv[1]) else 1)
