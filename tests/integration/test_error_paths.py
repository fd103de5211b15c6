"""The error table end to end: a full queue, a model not ready or an internal failure answers with
the same type and code over HTTP, server-sent events and WebSockets."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from app.engine.batcher import QueueFull
from app.engine.engine import EngineUnavailable
from app.engine.streaming import StreamSession
from app.main import create_app
from tests.conftest import wait_ready
from tests.integration.test_stream import stream_settings
from tests.streaming_support import ToneFactory
from tests.support import tone, wav_bytes

FAILURES = {
    "queue_full": (lambda: QueueFull(2.6), 429, "overloaded", "queue_full"),
    "not_ready": (lambda: EngineUnavailable("the server is shutting down"), 503, "service_unavailable", "not_ready"),
}


def failing_after(client: TestClient, monkeypatch: pytest.MonkeyPatch, pieces: int, exc: Exception) -> None:
    """The engine yields ``pieces`` pieces of a transcription, then raises ``exc``."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    real = type(engine).transcribe_pieces.__get__(engine)  # not an earlier patch

    async def transcribe_pieces(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        async for index, hyp in _enumerate(real(*args, **kwargs)):
            if index == pieces:
                raise exc
            yield hyp
        raise exc

    monkeypatch.setattr(engine, "transcribe_pieces", transcribe_pieces)


async def _enumerate(items: AsyncGenerator[Any, None]) -> AsyncGenerator[tuple[int, Any], None]:
    index = 0
    async for item in items:
        yield index, item
        index += 1


def sse(client: TestClient) -> Any:
    files = {"file": ("a.wav", wav_bytes(tone(2.0)))}
    return client.post("/v1/audio/transcriptions", data={"model": "whisper-1", "stream": "true"}, files=files)


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("data: ")) for line in text.split("\n\n") if line.startswith("data: ")]


@pytest.mark.parametrize("name", list(FAILURES))
def test_sse_failing_mid_stream_carries_the_http_type_and_code(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    make, status, type_, code = FAILURES[name]
    failing_after(client, monkeypatch, 0, make())
    before = sse(client)
    assert before.status_code == status and before.json()["error"]["code"] == code  # before the first event: HTTP

    failing_after(client, monkeypatch, 1, make())
    with caplog.at_level(logging.WARNING):
        response = sse(client)
    assert response.status_code == 200
    error = events(response.text)[-1]
    assert error["type"] == "error" and (error["error"]["type"], error["error"]["code"]) == (type_, code)
    assert (before.json()["error"]["type"], before.json()["error"]["code"]) == (type_, code)
    assert not [r for r in caplog.records if r.exc_info], "logged as a crash"
    reason = f'reason="{code}"'
    assert any(reason in line for line in client.get("/metrics").text.splitlines() if line.startswith("asr_rejected"))


def test_sse_internal_failure_carries_an_id_that_is_in_the_log(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failing_after(client, monkeypatch, 1, RuntimeError("secret detail"))
    with caplog.at_level(logging.ERROR):
        response = sse(client)
    error = events(response.text)[-1]["error"]
    assert (error["type"], error["code"]) == ("server_error", "internal_error")
    assert "secret" not in response.text and error["id"] in error["message"]
    assert any(error["id"] in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.fixture
def stream_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A streaming app whose stream sessions find the queue full."""

    async def full(self: StreamSession) -> None:
        raise QueueFull(2.6)

    monkeypatch.setattr(StreamSession, "run", full)
    app = create_app(stream_settings(), recognizer_factory=ToneFactory())
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


@pytest.mark.parametrize("url", ["/stream", "/v1/realtime?intent=transcription"])
def test_websockets_close_on_a_full_queue_with_the_http_type_and_code(stream_client: TestClient, url: str) -> None:
    with stream_client.websocket_connect(url) as ws:
        message = ws.receive_json()
        if message["type"] == "session.created":
            message = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1013 and message["type"] == "error"
    assert (message["error"]["type"], message["error"]["code"]) == ("overloaded", "queue_full")
