"""Who may call the service: API keys, per-client limits and WebSocket origins (docs/security.md).

One ASGI middleware decides for HTTP requests and WebSocket connections alike, before any route
runs. It names each admitted caller in ``scope["state"]["client_id"]``: its key's id
(``key:1a2b3c4d``) when keys are set, else its address.

Browsers cannot set headers on a WebSocket, so a stream may instead offer the subprotocols
``["asr", "bearer.<key>"]``; the server answers with ``asr``. (A key in the URL's query would be
written to access logs, proxies' logs and the browser's history; a subprotocol is not.)
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Collection
from enum import Enum
from typing import Any

from starlette._utils import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api_keys import KeyRing
from app.config import Settings
from app.errors import (
    NotServed,
    OriginNotAllowed,
    RateLimited,
    Refusal,
    Unauthenticated,
    describe,
    json_response,
    ws_message,
)
from app.metrics import Metrics
from app.origins import OriginPolicy
from app.rate_limit import StreamCounts, TokenBuckets, retry_after

logger = logging.getLogger(__name__)

PROBES = frozenset({"/healthz", "/readyz"})
SUBPROTOCOL = "asr"
KEY_SUBPROTOCOL = "bearer."


class Access(Enum):
    """What a path needs: nothing and no limits (probes), nothing, a key when keys are set, or
    not served at all (404, as if it did not exist)."""

    PROBE = "probe"
    OPEN = "open"
    KEY = "key"
    CLOSED = "closed"


class AccessPolicy:
    """Which paths need a key: the probes never; /metrics, the docs and the demo page by setting."""

    def __init__(self, settings: Settings, docs_paths: Collection[str]) -> None:
        self.metrics_access = Access(settings.metrics_access)
        self.docs_access = Access(settings.docs_access)
        self.demo_access = Access(settings.demo_access)
        self.docs_paths = frozenset(docs_paths)

    def access(self, path: str) -> Access:
        if path in PROBES:
            return Access.PROBE
        if path == "/metrics":
            return self.metrics_access
        if path in self.docs_paths:
            return self.docs_access
        if path == "/" or path.startswith("/static/"):
            return self.demo_access  # fixed files, no data; open or not, its calls need the key
        return Access.KEY


class AccessMiddleware:
    """Admits or refuses each HTTP request and WebSocket connection (see the module docstring)."""

    def __init__(
        self, app: ASGIApp, settings: Settings, metrics: Metrics, keys: KeyRing, docs_paths: Collection[str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.keys = keys
        self.policy = AccessPolicy(settings, docs_paths)
        self.origins = OriginPolicy(settings)
        per_minute = settings.rate_limit_per_minute
        self.buckets = TokenBuckets(per_minute, settings.rate_limit_burst) if per_minute > 0 else None
        self.streams = StreamCounts(settings.max_streams_per_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        access = self.policy.access(get_route_path(scope))
        if access is Access.PROBE:
            await self.app(scope, receive, send)
            return
        try:
            client = self._admit(scope, access)
        except Refusal as refusal:
            self._record(scope, refusal)
            await _refuse(refusal, scope, receive, send)
            return
        scope.setdefault("state", {})["client_id"] = client
        if scope["type"] == "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(_without_key_subprotocol(scope), receive, _answering_subprotocol(scope, send))
        finally:
            self.streams.close(client)

    def _admit(self, scope: Scope, access: Access) -> str:
        """The caller's client id, or a Refusal; a WebSocket admitted is counted as open."""
        if access is Access.CLOSED:
            raise NotServed("Not Found", code="not_found")
        headers = _headers(scope)
        if scope["type"] == "websocket" and not self.origins.allows(headers.get("origin"), headers.get("host")):
            raise OriginNotAllowed("this origin may not open streams on this server", code="origin_not_allowed")
        client = self._identify(scope, headers, access)
        if self.buckets is not None:
            wait = self.buckets.take(client)
            if wait:
                message = f"too many requests; retry after {retry_after(wait)} s"
                raise RateLimited(message, code="rate_limited", headers={"Retry-After": retry_after(wait)})
        if scope["type"] == "websocket" and not self.streams.open(client):
            message = f"this client holds its limit of {self.streams.limit} streams; retry later"
            raise RateLimited(message, code="too_many_streams_for_key")
        return client

    def _identify(self, scope: Scope, headers: dict[str, str], access: Access) -> str:
        if self.keys.enabled:
            presented = _presented_key(scope, headers)
            key_id = None if presented is None else self.keys.identify(presented)
            if key_id is not None:
                return key_id
            if access is Access.KEY:
                if presented is None:
                    message = "this server needs an API key: send the header 'Authorization: Bearer <key>'"
                    raise Unauthenticated(message, code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
                raise Unauthenticated(
                    "the API key is not valid", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
                )
        client = scope.get("client")
        return str(client[0]) if client else "unknown"

    def _record(self, scope: Scope, refusal: Refusal) -> None:
        self.metrics.errors.labels(type=refusal.type).inc()
        if isinstance(refusal, RateLimited):
            self.metrics.rejected.labels(reason=refusal.code).inc()
        client = scope.get("client")
        address = client[0] if client else "unknown"
        kind = "stream" if scope["type"] == "websocket" else scope.get("method", "")
        path = scope["path"][:100]  # shown with repr: no line breaks from a client reach the log
        logger.warning("refused %s %r from %s: %s %s", kind, path, address, refusal.status, refusal.code)


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", [])}


def _presented_key(scope: Scope, headers: dict[str, str]) -> str | None:
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if scope["type"] == "websocket":
        for protocol in scope.get("subprotocols", []):
            if protocol.startswith(KEY_SUBPROTOCOL):
                return str(protocol[len(KEY_SUBPROTOCOL) :])
    return None


def _without_key_subprotocol(scope: Scope) -> Scope:
    """The scope the routes see: the key's subprotocol removed, so nothing can echo or log it."""
    offered = scope.get("subprotocols", [])
    return {**scope, "subprotocols": [p for p in offered if not p.startswith(KEY_SUBPROTOCOL)]}


def _answering_subprotocol(scope: Scope, send: Send) -> Send:
    """A browser that offers subprotocols fails the connection unless the server picks one."""
    if SUBPROTOCOL not in scope.get("subprotocols", []):
        return send

    async def send_choosing(message: Message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": SUBPROTOCOL}
        await send(message)

    return send_choosing


async def _refuse(refusal: Refusal, scope: Scope, receive: Receive, send: Send) -> None:
    """The refusal as the error table renders it: an HTTP answer, a refused WebSocket handshake
    (rows without a close code), or an error message and the row's close code."""
    problem = describe(refusal)
    if scope["type"] == "http":
        await json_response(problem)(scope, receive, send)
        return
    if problem.close is None:  # refuse the handshake: an HTTP answer, no WebSocket
        if "websocket.http.response" in scope.get("extensions", {}):
            await json_response(problem)(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1008})
        return
    if (await receive())["type"] != "websocket.connect":
        return  # gone already
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if SUBPROTOCOL in scope.get("subprotocols", []):
        accept["subprotocol"] = SUBPROTOCOL
    with contextlib.suppress(OSError):  # a client that hangs up meanwhile is no error
        await send(accept)
        await send({"type": "websocket.send", "text": json.dumps(ws_message(problem))})  # also OpenAI's shape
        await send({"type": "websocket.close", "code": problem.close, "reason": refusal.code})
