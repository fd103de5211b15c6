"""Typed service errors and the one place where exceptions become JSON responses.

Every error body has the shape ``{"error": {"type", "message", "code"}}``. Internal exception
text never reaches a client: an unexpected failure answers 500 with an error id that is also
in the log (see ``app.middleware``).
"""

from __future__ import annotations

import logging
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


class ServiceError(Exception):
    """An error with a status code, an error type and a stable machine-readable code."""

    status = 500
    type = "server_error"

    def __init__(self, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.type
        self.headers = headers or {}


class InvalidRequest(ServiceError):
    status = 400
    type = "invalid_request_error"


class InvalidParameter(ServiceError):
    """A request option has a value outside its range or an unknown choice (``param`` names it)."""

    status = 422
    type = "invalid_request_error"

    def __init__(self, message: str, code: str = "invalid_parameter", param: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param


class PayloadTooLarge(ServiceError):
    status = 413
    type = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    type = "unsupported_media_type"


class Overloaded(ServiceError):
    status = 429
    type = "overloaded"


class NotReady(ServiceError):
    status = 503
    type = "service_unavailable"


class ClientDisconnected(ServiceError):
    """The client closed the connection while its request was being processed (nobody reads
    the answer; 499 is the status proxies log for it)."""

    status = 499
    type = "client_closed_request"


class DeadlineExceeded(ServiceError):
    status = 504
    type = "timeout"


_AUDIO_ERRORS: dict[type[audio.AudioError], type[ServiceError]] = {
    audio.EmptyAudioError: InvalidRequest,
    audio.UndecodableAudioError: InvalidRequest,
    audio.ZeroLengthAudioError: InvalidRequest,
    audio.UnsupportedFormatError: UnsupportedMediaType,
    audio.AudioTooLongError: PayloadTooLarge,
}


def from_audio_error(exc: audio.AudioError) -> ServiceError:
    """Map an audio decoding problem to the service error a client sees."""
    kind = _AUDIO_ERRORS.get(type(exc), InvalidRequest)
    return kind(str(exc), code=exc.code)


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


def error_body(type_: str, message: str, code: str | int | None, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "code": code, **extra}}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the JSON error shape."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        _count(request, exc.type)
        log = logger.warning if exc.status < 500 else logger.error
        log("request failed: %s %s (%s)", exc.status, exc.code, exc.message)
        extra = {"param": exc.param} if isinstance(exc, InvalidParameter) else {}
        body = error_body(exc.type, exc.message, exc.code, **extra)
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(audio.AudioError)
    async def _audio_error(request: Request, exc: audio.AudioError) -> JSONResponse:
        return await _service_error(request, from_audio_error(exc))

    @app.exception_handler(BeamOptionsError)
    async def _beam_options(request: Request, exc: BeamOptionsError) -> JSONResponse:
        return await _service_error(request, InvalidParameter(str(exc)))

    @app.exception_handler(NoLanguageModel)
    async def _no_lm(request: Request, exc: NoLanguageModel) -> JSONResponse:
        return await _service_error(request, InvalidRequest(str(exc), code="no_language_model"))

    @app.exception_handler(NoSecondPass)
    async def _no_second_pass(request: Request, exc: NoSecondPass) -> JSONResponse:
        return await _service_error(request, InvalidRequest(str(exc), code="no_second_pass"))

    @app.exception_handler(EngineUnavailable)
    async def _unavailable(request: Request, exc: EngineUnavailable) -> JSONResponse:
        _reject(request, "not_ready")
        return await _service_error(request, NotReady(str(exc), code="not_ready", headers={"Retry-After": "5"}))

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        _reject(request, "queue_full")
        headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
        return await _service_error(request, Overloaded(str(exc), code="queue_full", headers=headers))

    @app.exception_handler(RequestTimeout)
    async def _timeout(request: Request, exc: RequestTimeout) -> JSONResponse:
        _reject(request, "deadline")
        return await _service_error(request, DeadlineExceeded(str(exc), code="deadline_exceeded"))

    @app.exception_handler(ClientDisconnected)
    async def _disconnected(request: Request, exc: ClientDisconnected) -> JSONResponse:
        _reject(request, "client_disconnected")
        logger.info("client disconnected; its queued work was dropped")
        return JSONResponse(error_body(exc.type, exc.message, "client_disconnected"), status_code=exc.status)

    @app.exception_handler(ClientDisconnect)
    async def _hung_up(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client closed the connection while sending its request (or stalled past the read
        # timeout): nobody reads this answer, and it is not the server's error.
        _reject(request, "client_disconnected")
        logger.info("client disconnected while sending its request")
        body = error_body(ClientDisconnected.type, "the client closed the connection", "client_disconnected")
        return JSONResponse(body, status_code=ClientDisconnected.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await _service_error(request, invalid_parameter(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        _count(request, "http_error")
        return JSONResponse(
            error_body("http_error", str(exc.detail), exc.status_code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )


def _count(request: Request, type_: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(type=type_).inc()


def _reject(request: Request, reason: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.rejected.labels(reason=reason).inc()
