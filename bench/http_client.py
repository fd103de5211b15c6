"""A lean HTTP/1.1 client for the load generator: keep-alive connections over asyncio streams.

The load generator shares the machine with the server it measures, so every cycle it spends is
taken from the server. A general client (httpx) spent about 12% of a core here at 75 requests/s;
this one sends requests whose bytes were built once, and reads only the status line, the
headers it needs and the body. It speaks just what the benchmark needs: POST with a body,
responses framed by Content-Length or chunked encoding, keep-alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpError(Exception):
    """The connection failed or the response was not HTTP/1.1 as expected."""


class ServerClosed(HttpError):
    """The server closed the connection before answering (as it may an idle keep-alive one)."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


def multipart_body(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, and its Content-Type header value."""
    boundary = "benchboundary7MA4YWxkTrZu0gW"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, head: bytes, body: bytes) -> Response:
        self.writer.writelines((head, body))
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ServerClosed("the server closed the connection before answering")
        version, _, rest = status_line.partition(b" ")
        if not version.startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP/1.x response: {status_line[:40]!r}")
        status = int(rest[:3])
        length, chunked, close = None, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            body = await self._chunked()
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            body, close = await self.reader.read(), True
        if close:
            self.close()
        return Response(status, body)

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    @property
    def closed(self) -> bool:
        return self.writer.is_closing() or self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class Client:
    """Up to ``connections`` keep-alive connections to the server of ``url``, reused in turn."""

    def __init__(self, url: str, connections: int, timeout_s: float) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.netloc = parts.hostname or "127.0.0.1", parts.port or 80, parts.netloc
        self.timeout_s = timeout_s
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)

    async def post(self, url: str, body: bytes, content_type: str) -> Response:
        """POST ``body`` to ``url`` (on this client's server) and read the response.

        A connection error, a malformed response or the timeout raises. A kept-alive connection
        that the server has closed meanwhile is replaced once, as browsers and httpx do.
        """
        parts = urlsplit(url)
        target = parts.path + ("?" + parts.query if parts.query else "")
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {self.netloc}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        async with self._slots:
            while self._idle and self._idle[-1].closed:
                self._idle.pop().close()
            reused = self._idle.pop() if self._idle else None
            if reused is not None:
                try:
                    return await self._exchange(reused, head, body)
                except (ServerClosed, ConnectionResetError, BrokenPipeError):
                    pass  # it went stale between requests: one more try on a new connection
            connection = _Connection(*await asyncio.open_connection(self.host, self.port))
            return await self._exchange(connection, head, body)

    async def _exchange(self, connection: _Connection, head: bytes, body: bytes) -> Response:
        try:
            response = await asyncio.wait_for(connection.exchange(head, body), self.timeout_s)
        except BaseException:
            connection.close()  # its state is unknown: never reuse it
            raise
        if not connection.closed:
            self._idle.append(connection)
        return response

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


@asynccontextmanager
async def client(url: str, connections: int, timeout_s: float) -> AsyncIterator[Client]:
    pool = Client(url, connections, timeout_s)
    try:
        yield pool
    finally:
        pool.close()
