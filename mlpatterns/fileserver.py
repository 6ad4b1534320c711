"""A read-only HTTP file server over one directory: the model repository of the model-load pattern.

    DIRECTORY=models PORT=8080 python -m mlpatterns.fileserver

Stands in for an object store (the original used a public Google Cloud Storage bucket): GET a path under
DIRECTORY, 404 for anything missing, `/health` for probes. Listing directories is refused.
"""

import functools
import logging
import os
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from pydantic_settings import BaseSettings

from mlpatterns.logging import configure_logging

logger = logging.getLogger(__name__)


class FileServerSettings(BaseSettings):
    directory: str = "models"
    host: str = "0.0.0.0"
    port: int = 8080


class ReadOnlyFiles(SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = b'{"health":"ok"}'
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if os.path.isdir(self.translate_path(self.path)):
            self.send_error(HTTPStatus.NOT_FOUND, "no listing")
            return
        super().do_GET()

    def refuse_method(self):
        """A read-only store: any other method is a 405 naming the allowed ones (http.server's default is 501)."""
        body = b'{"detail":"method not allowed: the model repository is read-only (GET, HEAD)"}'
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")  # a request body, if any, is not read
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = refuse_method

    def log_message(self, format, *args):
        logger.info("%s %s", self.address_string(), format % args)


def main() -> None:
    settings = FileServerSettings()
    configure_logging()
    handler = functools.partial(ReadOnlyFiles, directory=settings.directory)
    server = ThreadingHTTPServer((settings.host, settings.port), handler)
    logger.info("serving %s on %s:%d", os.path.abspath(settings.directory), settings.host, settings.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
