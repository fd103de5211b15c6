"""The bytes all uploads may hold at once: a body past the server-wide budget is refused with 429
while others hold it, and the budget comes back when their requests end."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.errors import Overloaded, PayloadTooLarge
from app.middleware import BodyLimitMiddleware


def _scope(size: int) -> Scope:
    return {"type": "http", "method": "POST", "path": "/transcribe", "headers": [(b"content-length", b"%d" % size)]}


def _receive(chunks: list[bytes]) -> Receive:
    queue = list(chunks)

    async def receive() -> Message:
        body = queue.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    return receive


async def _discard(message: Message) -> None:
    pass


class HoldingApp:
    """Reads its whole body, then holds the request open until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.read = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        self.read.set()
        await self.release.wait()


def test_uploads_share_a_budget_and_get_it_back() -> None:
    async def scenario() -> None:
        app = HoldingApp()
        middleware = BodyLimitMiddleware(app, max_bytes=600, max_total_bytes=1000)
        first = asyncio.create_task(middleware(_scope(600), _receive([b"a" * 300, b"a" * 300]), _discard))
        await app.read.wait()
        assert middleware.budget.held == 600
        with pytest.raises(Overloaded) as refused:  # 600 + 500 > 1000
            await middleware(_scope(500), _receive([b"b" * 250, b"b" * 250]), _discard)
        assert refused.value.status == 429 and refused.value.code == "uploads_over_capacity"
        assert refused.value.headers["Retry-After"] == "1"
        assert middleware.budget.held == 600  # the refused request gave back what it had taken
        app.release.set()
        await first
        assert middleware.budget.held == 0
        app.release.clear()
        app.read.clear()
        second = asyncio.create_task(middleware(_scope(500), _receive([b"b" * 500]), _discard))
        await app.read.wait()
        assert middleware.budget.held == 500
        app.release.set()
        await second
        assert middleware.budget.held == 0

    asyncio.run(scenario())


def test_a_body_past_its_own_limit_takes_nothing_from_the_budget() -> None:
    async def scenario() -> None:
        middleware = BodyLimitMiddleware(HoldingApp(), max_bytes=100, max_total_bytes=1000)
        chunked: Scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": [(b"transfer-encoding", b"chunked")],
        }
        with pytest.raises(PayloadTooLarge):
            await middleware(chunked, _receive([b"x" * 80, b"x" * 80]), _discard)
        assert middleware.budget.held == 0

    asyncio.run(scenario())
