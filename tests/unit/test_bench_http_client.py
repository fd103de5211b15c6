"""The load generator's HTTP/1.1 client against a small asyncio server: framing, keep-alive, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bench.http_client import client, multipart_body

RESPONSES = {
    b"/length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"/chunked": b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
    b"/close": b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
    b"/idle-close": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",  # then closed without a word
}


class Server:
    """Answers each request by its path; records connections and the bodies it received."""

    def __init__(self) -> None:
        self.connections = 0
        self.bodies: list[bytes] = []
        self.targets: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while request_line := await reader.readline():
            target = request_line.split(b" ")[1]
            self.targets.append(target)
            path = target.split(b"?")[0]
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            self.bodies.append(await reader.readexactly(length))
            if path == b"/slow":
                await asyncio.sleep(10)
            writer.write(RESPONSES[path])
            await writer.drain()
            if path == b"/close":
                break
            if path == b"/idle-close":
                await asyncio.sleep(0.05)  # as a server closes a keep-alive connection idle too long
                break
        writer.close()


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[Server, str]]:
    """A :class:`Server` listening on a free loopback port, and its base URL."""
    server = Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    try:
        yield server, f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    finally:
        listener.close()


def test_responses_are_framed_and_connections_kept_alive() -> None:
    async def main() -> None:
        async with serving() as (server, url):
            body, content_type = multipart_body("file", "a.wav", b"RIFF\x00\x01", "audio/wav")
            async with client(url, connections=2, timeout_s=5) as pool:
                first = await pool.post(url + "/length", body, content_type)
                second = await pool.post(url + "/chunked?x=1", b"abc", "audio/pcm;rate=16000")
                assert (first.status, first.body) == (200, b"hello")
                assert (second.status, second.body) == (201, b"abcde")
                assert server.connections == 1  # the second request reused the first connection
                closed = await pool.post(url + "/close", b"", "audio/wav")
                assert (closed.status, closed.body) == (429, b"no")
                again = await pool.post(url + "/length", b"x", "audio/wav")
                assert again.status == 200 and server.connections == 2  # a new one after Connection: close
            assert server.targets[:2] == [b"/length", b"/chunked?x=1"]
            assert server.bodies[0] == body and b'name="file"; filename="a.wav"' in body
            assert content_type.startswith("multipart/form-data; boundary=")

    run(main())


def test_a_kept_alive_connection_the_server_closed_is_replaced() -> None:
    async def main() -> None:
        async with serving() as (server, url):
            async with client(url, connections=1, timeout_s=5) as pool:
                assert (await pool.post(url + "/idle-close", b"", "audio/wav")).body == b"ok"
                await asyncio.sleep(0.2)  # the server has closed it by now
                assert (await pool.post(url + "/length", b"", "audio/wav")).body == b"hello"
            assert server.connections == 2

    run(main())


def test_a_timeout_raises_and_its_connection_is_not_reused() -> None:
    async def main() -> None:
        async with serving() as (server, url):
            async with client(url, connections=1, timeout_s=0.2) as pool:
                with pytest.raises(TimeoutError):
                    await pool.post(url + "/slow", b"", "audio/wav")
                assert (await pool.post(url + "/length", b"", "audio/wav")).body == b"hello"
            assert server.connections == 2

    run(main())
