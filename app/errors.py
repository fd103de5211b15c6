"""Typed service errors, the one table that says how each reaches a client, and its renderers.

:data:`ERROR_TABLE` maps an exception type to its HTTP status, error type, code, WebSocket close code
and Retry-After. :func:`describe` reads it into a :class:`Problem`; the renderers turn a problem
into a JSON response (:func:`json_response`, for every FastAPI exception handler), a WebSocket
error message (:func:`ws_message`; the Realtime API's event is built from the same problem) or a
server-sent ``error`` event (:func:`sse_event`). Every error body has the shape
``{"error": {"type", "message", "code"}}``.

Internal exception text never reaches a client: an exception without a row is an internal
error (:func:`internal_error`): 500 / close 1011 with an error id that is also in the log.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.asr import audio
from app.asr.beam import BeamOptionsError
from app.engine.batcher import QueueFull
from app.engine.engine import EngineUnavailable, NoLanguageModel, NoSecondPass, RequestTimeout

logger = logging.getLogger(__name__)

# WebSocket close codes (RFC 6455; 4000-4999 are the application's own)
NORMAL, GOING_AWAY, UNSUPPORTED, POLICY, TOO_BIG, INTERNAL, TRY_LATER = 1000, 1001, 1003, 1008, 1009, 1011, 1013
UNAUTHENTICATED = 4401  # mirrors HTTP 401


class ServiceError(Exception):
    """An error raised to be answered: its row in :data:`ERROR_TABLE` (by class) gives the status and
    error type; ``code`` is a stable machine-readable name (the type when not given)."""

    def __init__(self, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.type
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return row_of(self).status

    @property
    def type(self) -> str:
        return row_of(self).type


class InvalidRequest(ServiceError):
    """A request the server cannot use as sent (400)."""


class InvalidParameter(ServiceError):
    """A request option has a value outside its range or an unknown choice (``param`` names it)."""

    def __init__(self, message: str, code: str = "invalid_parameter", param: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param


class PayloadTooLarge(ServiceError):
    """A body or its audio over a limit (413)."""


class UnsupportedMediaType(ServiceError):
    """Not a content type or audio format the server reads (415)."""


class Overloaded(ServiceError):
    """The server holds as much work as it may; retry later (429)."""


class NotReady(ServiceError):
    """The server cannot take work now (503)."""


class ClientDisconnected(ServiceError):
    """The client closed the connection while its request was being processed (nobody reads
    the answer; 499 is the status proxies log for it)."""


class DeadlineExceeded(ServiceError):
    """The request did not finish within its deadline (504)."""


class Refusal(ServiceError):
    """A caller turned away before any route runs (``app.access``). A row whose close code is None
    refuses a WebSocket handshake itself with the HTTP status."""


class Unauthenticated(Refusal):
    """No API key, or one the server does not know (401)."""


class OriginNotAllowed(Refusal):
    """A browser page from an origin that may not open streams (403)."""


class NotServed(Refusal):
    """A path this server does not serve by its settings (404)."""


class RateLimited(Refusal):
    """A caller over its request rate or its stream count (429)."""


def _queue_wait(exc: QueueFull) -> int:
    return max(1, round(exc.retry_after_s))


@dataclass(frozen=True)
class Row:
    """How one kind of error reaches a client, and how the server records it."""

    status: int  # HTTP status
    type: str  # error.type
    code: str | None  # error.code; None: the exception's own ``code``
    close: int | None  # WebSocket close code; None: the handshake itself is refused with the status
    retry_after: int | Callable[[Any], int] | None = None  # Retry-After seconds, fixed or from the exception
    message: str | None = None  # a fixed message; None: the exception's own
    level: int = logging.WARNING  # how it is logged
    reject: str | None = None  # reason in asr_rejected_requests_total; None: not a rejection
    counted: bool = True  # whether it counts in asr_errors_total (a client that hangs up is not an error)


_BAD_AUDIO = Row(400, "invalid_request_error", None, POLICY)
_HUNG_UP = Row(
    499,
    "client_closed_request",
    "client_disconnected",
    GOING_AWAY,
    level=logging.INFO,
    reject="client_disconnected",
    counted=False,
)

# The one table: exception type -> what the client sees. Looked up along the exception's classes.
ERROR_TABLE: dict[type[BaseException], Row] = {
    # The service's own errors (their code is given where they are raised)
    ServiceError: Row(500, "server_error", None, INTERNAL, level=logging.ERROR),
    InvalidRequest: Row(400, "invalid_request_error", None, POLICY),
    InvalidParameter: Row(422, "invalid_request_error", None, POLICY),
    PayloadTooLarge: Row(413, "payload_too_large", None, TOO_BIG),
    UnsupportedMediaType: Row(415, "unsupported_media_type", None, UNSUPPORTED),
    Overloaded: Row(429, "overloaded", None, TRY_LATER),
    NotReady: Row(503, "service_unavailable", None, TRY_LATER),
    DeadlineExceeded: Row(504, "timeout", None, INTERNAL, level=logging.ERROR),
    ClientDisconnected: _HUNG_UP,
    Unauthenticated: Row(401, "authentication_error", None, UNAUTHENTICATED),
    OriginNotAllowed: Row(403, "permission_error", None, None),
    NotServed: Row(404, "http_error", None, None),
    RateLimited: Row(429, "rate_limit_error", None, TRY_LATER),
    # The engine's
    QueueFull: Row(429, "overloaded", "queue_full", TRY_LATER, retry_after=_queue_wait, reject="queue_full"),
    EngineUnavailable: Row(503, "service_unavailable", "not_ready", TRY_LATER, retry_after=5, reject="not_ready"),
    RequestTimeout: Row(504, "timeout", "deadline_exceeded", INTERNAL, level=logging.ERROR, reject="deadline"),
    NoLanguageModel: Row(400, "invalid_request_error", "no_language_model", POLICY),
    NoSecondPass: Row(400, "invalid_request_error", "no_second_pass", POLICY),
    # Decoding options and audio input
    BeamOptionsError: Row(422, "invalid_request_error", "invalid_parameter", POLICY),
    audio.AudioError: _BAD_AUDIO,
    audio.EmptyAudioError: _BAD_AUDIO,
    audio.UndecodableAudioError: _BAD_AUDIO,
    audio.ZeroLengthAudioError: _BAD_AUDIO,
    audio.UnsupportedFormatError: Row(415, "unsupported_media_type", None, UNSUPPORTED),
    audio.AudioTooLongError: Row(413, "payload_too_large", None, TOO_BIG),
    # The framework's: a client that hung up while sending its request (or stalled past the read timeout)
    ClientDisconnect: Row(
        499,
        "client_closed_request",
        "client_disconnected",
        GOING_AWAY,
        message="the client closed the connection",
        level=logging.INFO,
        reject="client_disconnected",
        counted=False,
    ),
}
INTERNAL_ROW = Row(500, "server_error", "internal_error", INTERNAL, level=logging.ERROR)


def row_of(exc: BaseException) -> Row:
    """The row of ``exc``'s nearest class in :data:`ERROR_TABLE` (:data:`INTERNAL_ROW` if none)."""
    for kind in type(exc).__mro__:
        row = ERROR_TABLE.get(kind)
        if row is not None:
            return row
    return INTERNAL_ROW


@dataclass(frozen=True)
class Problem:
    """An error as a client sees it, whatever carries it (HTTP, WebSocket or server-sent events)."""

    status: int
    type: str
    code: str | int
    message: str
    close: int | None
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # "param" of a 422, "id" of an internal error
    level: int = logging.WARNING
    reject: str | None = None
    counted: bool = True

    def error(self) -> dict[str, Any]:
        """The ``error`` object of every rendering."""
        return {"type": self.type, "message": self.message, "code": self.code, **self.extra}

    def log(self, what: str) -> None:
        logger.log(self.level, "%s: %s (%s)", what, self.code, self.message)

    def record(self, metrics: Any) -> None:
        """Count it in ``metrics`` (an :class:`app.metrics.Metrics`, or None in bare tests)."""
        if metrics is None:
            return
        if self.counted:
            metrics.errors.labels(type=self.type).inc()
        if self.reject is not None:
            metrics.rejected.labels(reason=self.reject).inc()


def describe(exc: BaseException, what: str = "request failed") -> Problem:
    """What a client is told about ``exc``; an exception without a row is an internal error
    (:func:`internal_error`, logged as ``what``: call this inside the ``except`` block)."""
    if isinstance(exc, RequestValidationError):
        exc = invalid_parameter(exc)
    if isinstance(exc, StarletteHTTPException):  # the framework's 404 and 405: their status is the code
        headers = dict(exc.headers or {})
        return Problem(
            exc.status_code, "http_error", exc.status_code, str(exc.detail), None, headers, level=logging.DEBUG
        )
    row = row_of(exc)
    if row is INTERNAL_ROW:
        return internal_error(what)
    headers = dict(exc.headers) if isinstance(exc, ServiceError) else {}
    retry = row.retry_after(exc) if callable(row.retry_after) else row.retry_after
    if retry is not None:
        headers["Retry-After"] = str(retry)
    message = row.message or (exc.message if isinstance(exc, ServiceError) else str(exc))
    code = row.code or getattr(exc, "code", None) or row.type
    extra = {"param": getattr(exc, "param", None)} if row.status == 422 else {}  # a 422 names its parameter
    return Problem(row.status, row.type, code, message, row.close, headers, extra, row.level, row.reject, row.counted)


def internal_error(what: str) -> Problem:
    """An unexpected failure: the traceback goes to the log with a fresh error id, and the client
    gets only that id (call inside the ``except`` block)."""
    error_id = uuid.uuid4().hex[:16]
    logger.exception("%s; error id %s", what, error_id)
    row = INTERNAL_ROW
    message = f"internal error; quote error id {error_id} when reporting it"
    extra = {"id": error_id}
    return Problem(row.status, row.type, str(row.code), message, row.close, {}, extra, logging.ERROR)


def stream_closing(close: int, code: str, message: str) -> Problem:
    """An error of the WebSocket protocol itself (a bad message, a stream limit): no HTTP form;
    its type is ``server_error`` when the server is at fault or busy, else the client's."""
    kind = "server_error" if close in (INTERNAL, TRY_LATER) else "invalid_request_error"
    return Problem(0, kind, code, message, close, counted=False)


# Renderers


def json_response(problem: Problem) -> JSONResponse:
    """The HTTP answer: the problem's status, headers and ``{"error": ...}`` body."""
    return JSONResponse({"error": problem.error()}, status_code=problem.status, headers=problem.headers)


def ws_message(problem: Problem) -> dict[str, Any]:
    """The WebSocket message sent before a close: ``/stream``'s ``code`` and ``message``, and the
    same ``error`` object as HTTP's (the shape OpenAI clients read)."""
    return {"type": "error", "code": problem.code, "message": problem.message, "error": problem.error()}


def sse_event(problem: Problem) -> dict[str, Any]:
    """The server-sent ``error`` event that ends a stream of events."""
    return {"type": "error", "error": problem.error()}


def error_body(type_: str, message: str, code: str | int | None, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "code": code, **extra}}


def body_too_large(limit: int) -> PayloadTooLarge:
    """The request body passed ``limit`` bytes (raised while it is read, see ``app.middleware``)."""
    return PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes", code="body_too_large")


def invalid_parameter(exc: RequestValidationError) -> InvalidParameter:
    """FastAPI's validation of a query parameter as the documented 422, naming the first bad one
    (``"beam_size: Input should be a valid integer"``, ``param: "beam_size"``), the same shape
    the routers' own option checks give."""
    errors = exc.errors() or [{}]
    problems = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ())]
        name = ".".join(loc[1:] if len(loc) > 1 and loc[0] in ("query", "body", "path", "header") else loc)
        problems.append(f"{name or 'request'}: {err.get('msg', 'invalid')}")
    first = problems[0].split(": ", 1)[0]
    return InvalidParameter("; ".join(problems), param=None if first == "request" else first)


def install_error_handlers(app: FastAPI) -> None:
    """One handler for every row of the table (and FastAPI's own validation and HTTP errors)."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        problem = describe(exc)
        problem.record(getattr(request.app.state, "metrics", None))
        problem.log(f"request failed with {problem.status}")
        return json_response(problem)

    for kind in (*ERROR_TABLE, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(kind, handle)
