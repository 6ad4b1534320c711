"""Logging to stdout, configured once per process.

Patterns never write log files: the container runtime (or the local runner) collects stdout.
"""

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

_HANDLER_NAME = "mlpatterns-stdout"

# The id of the request (or job) being handled: set by the HTTP middleware from X-Request-ID (or generated), by a
# queue worker from the job, and sent on by the client on every call to another service.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Stamp each record with the request id of the context it is logged in (the handler formats it at once, in
    that same context). Text shows `-` outside a request; JSON shows null."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(rid)s]: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.rid = getattr(record, "request_id", None) or "-"
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for patterns whose logs are shipped and queried."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", None),
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", json_format: bool = False) -> None:
    """Send the root logger to stdout. Safe to call again: the handler is replaced, not added twice."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every call at INFO: a line per hop of every request. Calls between services are counted in
    # metrics and their failures answered and logged by the core client, so keep only its warnings.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
