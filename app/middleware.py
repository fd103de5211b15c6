"""ASGI middleware: request ids, per-route metrics, the last-resort 500 handler, and the body limit."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Overloaded, Problem, body_too_large, internal_error
from app.logs import request_id_var
from app.metrics import Metrics

logger = logging.getLogger(__name__)

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Gives each HTTP request an id (``X-Request-ID``), records its metrics, and turns an
    unhandled exception into a JSON 500 that carries an error id also written to the log."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = {"code": 500, "sent": False}
        counted = scope["type"] == "http" and scope["path"] != "/metrics"  # a scrape does not count itself
        if counted:
            self.metrics.requests_in_progress.inc()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
                if scope.get("state", {}).get("audio_truncated"):  # set by app.routers.inputs
                    message["headers"].append((b"x-audio-truncated", b"true"))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            problem = internal_error("unhandled error")
            problem.record(self.metrics)
            if scope["type"] == "http" and not status["sent"]:
                await _send_problem(send_with_id, problem)
            elif scope["type"] == "http":
                raise
        finally:
            if counted:
                self.metrics.requests_in_progress.dec()
            if scope["type"] == "http":
                self._observe(scope, status["code"], time.perf_counter() - started)
            request_id_var.reset(token)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = _route_label(scope)
        self.metrics.requests.labels(route=route, method=scope["method"], status=str(status)).inc()
        self.metrics.request_duration.labels(route=route).observe(seconds)


class BodyLimitMiddleware:
    """Refuses a request body larger than ``max_bytes`` while it is read, for every transfer
    encoding (Content-Length or chunked, multipart within either): the app never receives more
    than the limit, so the multipart parser never spools more than it to disk. Reading past the
    limit raises :class:`~app.errors.PayloadTooLarge` (413 ``body_too_large``); a declared
    Content-Length past it fails at the first read, before any of the body is taken.

    A response that starts before the body was read to its end closes the connection, so the
    server does not go on reading (and dropping) the rest of, say, a 1 GB upload."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_total_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.budget = BodyBudget(max_total_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = _body_framing(scope)
        state = {"received": 0, "done": declared in (None, 0) and not chunked}

        async def limited_receive() -> Message:
            if declared is not None and declared > self.max_bytes:
                raise body_too_large(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if state["received"] + size > self.max_bytes:
                    raise body_too_large(self.max_bytes)
                self.budget.take(size)
                state["received"] += size
                state["done"] = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not state["done"]:
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, limited_receive, closing_send)
        finally:
            self.budget.give(state["received"])


class BodyBudget:
    """Request body bytes that all requests together may hold at once (in memory, or spooled to disk
    by the multipart parser): a body is held until its request ends, so this bounds what uploads
    cost however many connections send them. A read that would pass the budget answers 429."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0

    def take(self, size: int) -> None:
        if self.held + size > self.max_bytes:
            raise Overloaded(
                f"the server holds its limit of {self.max_bytes} bytes of uploads; retry shortly",
                code="uploads_over_capacity",
                headers={"Retry-After": "1"},
            )
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size


def _body_framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared Content-Length (None if absent or unreadable) and whether the body is chunked."""
    declared, chunked = None, False
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit():
            declared = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return declared, chunked


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_ID.match(text) else None
    return None


def _route_label(scope: Scope) -> str:
    """The matched route's path template; unmatched paths share one label (bounded cardinality)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


async def _send_problem(send: Send, problem: Problem) -> None:
    body = json.dumps({"error": problem.error()}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": problem.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
