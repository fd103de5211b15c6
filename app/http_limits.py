"""Connection-level limits of the HTTP server (docs/security.md, "HTTP connections").

uvicorn's httptools protocol, extended with what neither uvicorn nor httptools offers:

- a request head larger than ``max_header_bytes`` is answered 431 and the connection closed
  (httptools accepts any size, and joins a long header piece by piece at quadratic cost);
- a connection must send a complete request head within ``header_timeout_s`` of opening (or of
  its first byte after a keep-alive pause), and a request body must not pause longer than
  ``read_timeout_s`` (slowloris, idle sockets);
- past ``max_connections`` open connections, a new one is answered 503 as soon as its head
  arrives (or closed if none comes within ``REFUSAL_WAIT_S``); the probes are still served, so
  liveness stays true during a flood. Past the file-descriptor budget, a connection is closed
  unread, so the server never runs out of descriptors and keeps accepting.

uvicorn's own ``timeout_keep_alive`` closes connections idle between requests; its
``limit_concurrency`` is not used (it waits for a head before refusing, counts idle connections
against requests alike, and would refuse the probes too).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.access import PROBES
from app.config import Settings
from app.errors import error_body

logger = logging.getLogger(__name__)

FD_HEADROOM = 512
"""File descriptors kept for everything but client connections: model files, threads' pipes, logs."""

LISTEN_BACKLOG = 4096
"""Connections the kernel may hold for the server to accept (uvicorn's default: 2048); Linux caps
it at net.core.somaxconn (4096 by default). A deeper queue absorbs a burst of connections that
would otherwise be dropped and retried by TCP after a second, probes included."""

REFUSAL_WAIT_S = 0.5
"""How long a connection past ``max_connections`` may take to send its head (a probe's comes at once)."""

LINGER_S = 1.0
"""After a 431, how long the rest of the request is read and dropped so the client sees the answer."""

LINGER_BYTES = 1 << 20
"""... and at most this much of it."""

LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class HttpLimits:
    """The limits one server applies to every connection, and where refusals are counted."""

    max_connections: int
    fd_budget: int  # connections beyond it are closed unread
    max_header_bytes: int
    header_timeout_s: float
    read_timeout_s: float
    keep_alive_timeout_s: float
    on_refused: Callable[[str], None] = lambda reason: None


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            logger.warning("could not raise the open-file limit above %d", soft)
    return soft


def http_limits(settings: Settings, fd_limit: int, on_refused: Callable[[str], None]) -> HttpLimits:
    """The limits from the settings, with ``max_connections`` kept to half the descriptors left
    after ``FD_HEADROOM`` (the other half absorbs connections waiting for their refusal)."""
    fd_budget = max(2, fd_limit - FD_HEADROOM)
    max_connections = min(settings.max_connections, fd_budget // 2)
    if max_connections < settings.max_connections:
        logger.warning(
            "max_connections lowered from %d to %d: the open-file limit is %d (raise it with ulimit -n)",
            settings.max_connections,
            max_connections,
            fd_limit,
        )
    return HttpLimits(
        max_connections=max_connections,
        fd_budget=fd_budget,
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        read_timeout_s=settings.read_timeout_s,
        keep_alive_timeout_s=settings.keep_alive_timeout_s,
        on_refused=on_refused,
    )


def limited_protocol(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``), bound to ``limits``."""
    return type("BoundLimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})


class _RefusalLog:
    """One warning per reason every ``LOG_EVERY_S`` with a count, not one per connection: a
    flood must not become a flood of log lines."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def __call__(self, reason: str, client: Any) -> None:
        self._counts[reason] = self._counts.get(reason, 0) + 1
        now = time.monotonic()
        since = now - self._last.get(reason, now - LOG_EVERY_S)
        if since >= LOG_EVERY_S:
            count, self._counts[reason], self._last[reason] = self._counts[reason], 0, now
            logger.warning(
                "connection refused: %s (%d in the last %.0f s; latest from %s)", reason, count, since, client
            )


_refusal_log = _RefusalLog()


def _json_response(status: int, reason: bytes, body: dict[str, Any], extra: bytes = b"") -> bytes:
    content = json.dumps(body).encode()
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n%s\r\n" % (
        status,
        reason,
        len(content),
        extra,
    )
    return head + content


HEAD_TOO_LARGE = _json_response(
    431,
    b"Request Header Fields Too Large",
    error_body("invalid_request_error", "the request head (request line and headers) is too large", "header_too_large"),
)
TOO_MANY_CONNECTIONS = _json_response(
    503,
    b"Service Unavailable",
    error_body("service_unavailable", "too many open connections; retry later", "too_many_connections"),
    b"retry-after: 1\r\n",
)


async def _too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    head, body = TOO_MANY_CONNECTIONS.split(b"\r\n\r\n", 1)
    headers = [tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")[1:]]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head size limit, head and body timeouts and a
    connection limit (module docstring)."""

    limits: HttpLimits

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.timeout_keep_alive = self.limits.keep_alive_timeout_s  # type: ignore[assignment]  # float is fine
        self._in_head = True  # between a request's first byte (or the connection's start) and its head's end
        self._head_bytes = 0
        self._over_limit = False
        self._refused = False
        self._discarded = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._read_timer: asyncio.TimerHandle | None = None
        self._chunk_bytes = 0
        self._awaiting_body = False
        self._last_body_at = 0.0

    # Connection limit
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        open_now = len(self.connections)
        if open_now > self.limits.fd_budget:
            self._refuse("too_many_connections")
            transport.abort()
            return
        self._over_limit = open_now > self.limits.max_connections
        wait = min(REFUSAL_WAIT_S, self.limits.header_timeout_s) if self._over_limit else self.limits.header_timeout_s
        self._head_timer = self.loop.call_later(wait, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    # Head size and time. Timers are armed only when a head or body spans reads (a request that
    # arrives whole costs none), and counts are kept per read, not per byte.
    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._discard(len(data))
            return
        head_spans_chunk, self._chunk_bytes = self._in_head, len(data)
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        if self._in_head:
            if head_spans_chunk:
                self._head_bytes += len(data)  # a head that starts mid-read is counted from the next one
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse_head()
            elif self._head_timer is None:  # a head begun after a keep-alive pause
                self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)
        elif self._awaiting_body and self._read_timer is None:
            self._last_body_at = self.loop.time()
            self._read_timer = self.loop.call_later(self.limits.read_timeout_s, self._read_timeout)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._head_bytes + self._chunk_bytes > self.limits.max_header_bytes and self._head_size() > (
            self.limits.max_header_bytes
        ):
            self._refuse_head()
            return
        if self._over_limit and httptools.parse_url(self.url).path.decode("latin-1") not in PROBES:
            self._refuse("too_many_connections")
            self.app = _too_many_connections  # this connection's requests; the 503 closes it
        previous = self.cycle
        super().on_headers_complete()
        self._awaiting_body = self.cycle is not previous  # else a WebSocket upgrade: its protocol takes over

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._last_body_at = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._awaiting_body = False
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        if self._refused:
            return
        self._cancel_timers()
        if self.app is _too_many_connections:
            self.transport.write(TOO_MANY_CONNECTIONS)
            self.transport.close()
            return
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # the parser stumbling on what follows a refused head
            super().send_400_response(msg)

    # Timers
    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse("too_many_connections" if self._over_limit else "header_timeout")
            self.transport.close()

    def _read_timeout(self) -> None:
        self._read_timer = None
        idle = self.loop.time() - self._last_body_at
        if self.flow.read_paused or self.cycle.waiting_for_100_continue or idle < self.limits.read_timeout_s:
            # The app has not taken what was sent or asked for the body yet (not the client's
            # delay), or a piece came since.
            wait = (
                self.limits.read_timeout_s - idle if idle < self.limits.read_timeout_s else self.limits.read_timeout_s
            )
            self._read_timer = self.loop.call_later(wait, self._read_timeout)
            return
        if self._awaiting_body and not self.cycle.response_complete and not self.transport.is_closing():
            self._refuse("read_timeout")
            self.transport.close()  # the app sees http.disconnect

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._read_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._read_timer = None

    # Refusals
    def _refuse(self, reason: str) -> None:
        self.limits.on_refused(reason)
        _refusal_log(reason, self.client)

    def _refuse_head(self) -> None:
        """Answer 431, then read and drop a little of the rest so the client sees the answer
        instead of a reset; the parser is not fed again."""
        self._refused = True
        self._cancel_timers()
        self._refuse("header_too_large")
        self.transport.write(HEAD_TOO_LARGE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _discard(self, size: int) -> None:
        self._discarded += size
        if self._discarded > LINGER_BYTES:
            self.transport.close()
