"""Logging tagged with the current request id: one JSON object per line for log collectors, or
plain lines for a person at a terminal (``ASR_LOG_JSON=auto`` picks by whether stderr is one)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Literal, TextIO

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON with time, level, logger, message and request id."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def wants_json(setting: Literal["auto"] | bool, stream: TextIO) -> bool:
    """Whether to log JSON: as set, or for ``auto`` unless ``stream`` is an interactive terminal."""
    if setting == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (isatty is not None and isatty())
    return bool(setting)


def configure_logging(level: str = "info", as_json: Literal["auto"] | bool = "auto") -> None:
    """Route the root logger (and uvicorn's) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if wants_json(as_json, sys.stderr):
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
