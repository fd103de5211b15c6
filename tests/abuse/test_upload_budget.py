"""The decoded upload audio all transcriptions may hold at once (``max_transcribing_audio_seconds``):
an upload past it gets 429 before any of it is queued, and every way a request ends gives its
share back (plain answers, errors, OpenAI's server-sent events)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.engine.admission import AudioBudget
from app.engine.batcher import QueueFull
from app.main import create_app
from tests.conftest import wait_ready
from tests.support import FakeFactory, tone, wav_bytes


@pytest.fixture
def budgeted(fake: FakeFactory) -> Iterator[TestClient]:
    settings = Settings(warmup=False, log_json=False, max_transcribing_audio_seconds=3.0)
    with TestClient(create_app(settings, recognizer_factory=fake), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def held_s(client: TestClient) -> float:
    return float(client.app.state.engine._uploads.held_s)  # type: ignore[attr-defined]


def test_the_budget_refuses_what_does_not_fit_and_releases_once() -> None:
    budget = AudioBudget(10.0)
    first = budget.take(6.0)
    with pytest.raises(QueueFull):
        budget.take(5.0)
    with budget.take(4.0):
        assert budget.held_s == 10.0
    first.release()
    first.release()  # idempotent
    assert budget.held_s == 0.0


def test_an_upload_past_the_budget_gets_429_and_others_are_served(budgeted: TestClient) -> None:
    long = budgeted.post("/transcribe", content=wav_bytes(tone(4.0)), headers={"content-type": "audio/wav"})
    assert long.status_code == 429, long.text
    assert long.json()["error"]["code"] == "queue_full"
    assert int(long.headers["retry-after"]) >= 1
    short = budgeted.post("/transcribe", content=wav_bytes(tone(2.0)), headers={"content-type": "audio/wav"})
    assert short.status_code == 200, short.text
    assert held_s(budgeted) == 0.0


@pytest.mark.parametrize("stream", ["true", "false"])
def test_openai_uploads_give_their_share_back(budgeted: TestClient, stream: str) -> None:
    files = {"file": ("a.wav", wav_bytes(tone(2.5)), "audio/wav")}
    reply = budgeted.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1", "stream": stream})
    assert reply.status_code == 200, reply.text
    assert held_s(budgeted) == 0.0
    files = {"file": ("a.wav", wav_bytes(tone(3.5)), "audio/wav")}
    refused = budgeted.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1", "stream": stream})
    assert refused.status_code == 429
    assert held_s(budgeted) == 0.0
