"""Which web pages may use the service from a browser: one allow-list, ``ASR_CORS_ORIGINS``, for
CORS (HTTP) and for WebSocket streams, plus the server's own origin (docs/security.md)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from app.config import Settings

_DEFAULT_PORTS = {"http": "80", "https": "443"}


def cors_origins(settings: Settings) -> list[str]:
    """The allowed origins (``https://app.example.com``); ``*`` allows any."""
    return [origin.strip().rstrip("/") for origin in settings.cors_origins.split(",") if origin.strip()]


def cors_options(settings: Settings) -> dict[str, Any]:
    """Starlette's CORSMiddleware arguments: the allow-list, bearer keys (no cookies), our headers."""
    return {
        "allow_origins": cors_origins(settings),
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["Authorization", "Content-Type", "X-Request-ID"],
        "expose_headers": ["Retry-After", "X-Request-ID", "WWW-Authenticate", "X-Audio-Truncated"],
        "max_age": 600,
    }


class OriginPolicy:
    """Decides whether a WebSocket handshake's ``Origin`` may open a stream."""

    def __init__(self, settings: Settings) -> None:
        self.allowed = frozenset(cors_origins(settings))

    def allows(self, origin: str | None, host: str | None) -> bool:
        """No Origin (not a browser), a listed one (or ``*``), or the server's own: the Origin's
        host and port equal the Host header's."""
        if origin is None or "*" in self.allowed or origin in self.allowed:
            return True
        parts = urlsplit(origin)
        default_port = _DEFAULT_PORTS.get(parts.scheme)
        if default_port is None or not parts.netloc or not host:
            return False  # e.g. "null" (a sandboxed frame or a file)
        return _host_port(parts.netloc, default_port) == _host_port(host, default_port)


def _host_port(netloc: str, default_port: str) -> str:
    """``host:port`` with the scheme's default port filled in; IPv6 addresses keep brackets."""
    netloc = netloc.lower()
    if netloc.startswith("["):
        host, _, rest = netloc.partition("]")
        host, port = host + "]", rest.removeprefix(":")
    else:
        host, _, port = netloc.partition(":")
    return f"{host}:{port or default_port}"
