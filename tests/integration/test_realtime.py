"""WS /v1/realtime (OpenAI's Realtime transcription API) through the full app over the tone model,
and the model aliases both OpenAI routes accept (``ASR_MODEL_ALIASES``)."""

from __future__ import annotations

import audioop  # type: ignore[import-not-found,unused-ignore]  # deprecated, still in 3.11: the reference G.711
import base64
import concurrent.futures
import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from app.main import create_app
from app.routers.realtime_protocol import PCMA, PCMU
from app.routers.realtime_protocol import pcm16 as to_pcm16
from tests.conftest import wait_ready
from tests.integration.test_stream import stream_settings
from tests.streaming_support import ToneFactory, chunks, pcm16, spell
from tests.support import FakeFactory, FakeSecondPass, tone, wav_bytes

RATE = 24000
CHUNK = 4800  # 100 ms of 24 kHz PCM16
URL = "/v1/realtime?intent=transcription"
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


@pytest.fixture
def rt_client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    overrides = {"stream_burst_s": 60.0, **getattr(request, "param", {})}
    app = create_app(stream_settings(**overrides), recognizer_factory=ToneFactory())
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


@contextlib.contextmanager
def connect(client: TestClient, url: str = URL) -> Iterator[WebSocketTestSession]:
    """A connection the client may close first. Starlette's test client cancels the app right after
    it sends the close; the server's cleanup still under way then surfaces here as CancelledError."""
    with contextlib.suppress(concurrent.futures.CancelledError), client.websocket_connect(url) as ws:
        yield ws


def append(ws: WebSocketTestSession, data: bytes, size: int = CHUNK) -> None:
    for piece in chunks(data, size):
        ws.send_json({"type": "input_audio_buffer.append", "audio": base64.b64encode(piece).decode()})


def until(ws: WebSocketTestSession, kind: str) -> list[dict[str, Any]]:
    """Events up to and including the first of type ``kind``."""
    events = []
    while not events or events[-1]["type"] != kind:
        events.append(ws.receive_json())
    return events


def opened(ws: WebSocketTestSession) -> dict[str, Any]:
    created = ws.receive_json()
    assert created["type"] == "session.created" and created["event_id"].startswith("event_")
    return dict(created["session"])


def test_session_created_and_updated_show_the_effective_config(rt_client: TestClient) -> None:
    with connect(rt_client) as ws:
        session = opened(ws)
        assert session["type"] == "transcription" and session["id"].startswith("sess_")
        audio_in = session["audio"]["input"]
        assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
        assert audio_in["turn_detection"] == {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 600,  # ASR_STREAM_SILENCE_MS
        }
        turn = {"type": "server_vad", "silence_duration_ms": 400, "prefix_padding_ms": 200, "threshold": 0.7}
        update = {"transcription": {"model": "gpt-4o-transcribe", "language": "en"}, "turn_detection": turn}
        ws.send_json({"type": "session.update", "session": {"type": "transcription", "audio": {"input": update}}})
        updated = ws.receive_json()
        assert updated["type"] == "session.updated"
        audio_in = updated["session"]["audio"]["input"]
        assert audio_in["turn_detection"] == turn and audio_in["transcription"]["model"] == "gpt-4o-transcribe"
        ws.send_json({"type": "session.update", "session": {"type": "transcription", "include": []}})
        assert ws.receive_json()["session"]["audio"]["input"]["turn_detection"] == turn  # absent: unchanged


def test_server_vad_items_equal_offline(rt_client: TestClient) -> None:
    audio = np.concatenate([spell("hello world", rate=RATE, tail_s=0.8), spell("abc", rate=RATE, lead_s=0.0)])
    data = pcm16(audio)
    with connect(rt_client) as ws:
        opened(ws)
        into_second_word = int((0.3 + 5 * 0.2 + 0.32 + 3 * 0.2) * RATE) * 2
        append(ws, data[:into_second_word])
        early = until(ws, DELTA)  # deltas while the audio still comes: the words before the last
        assert early[0]["type"] == "input_audio_buffer.speech_started"
        assert early[-1]["delta"] == "hello"
        append(ws, data[into_second_word:])
        events = early + until(ws, COMPLETED)
        events += until(ws, COMPLETED)
    items: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        items.setdefault(e["item_id"], []).append(e)
    assert len(items) == 2
    previous = None
    for item_id, item in items.items():
        kinds = [e["type"] for e in item]
        assert kinds[0] == "input_audio_buffer.speech_started" and kinds[-1] == COMPLETED
        stopped, committed = (
            kinds.index(k) for k in ("input_audio_buffer.speech_stopped", "input_audio_buffer.committed")
        )
        assert stopped < committed and item[committed]["previous_item_id"] == previous
        assert item[0]["audio_start_ms"] < item[stopped]["audio_end_ms"]
        deltas = "".join(e["delta"] for e in item if e["type"] == DELTA)
        assert deltas == item[-1]["transcript"] and item[-1]["content_index"] == 0
        previous = item_id
    transcripts = [item[-1]["transcript"] for item in items.values()]
    assert transcripts == ["hello world", "abc"]
    offline = rt_client.post("/transcribe", files={"file": ("a.wav", wav_bytes(audio, RATE))}).json()
    assert " ".join(transcripts) == offline["text"]


def test_manual_commits_and_clear(rt_client: TestClient) -> None:
    with connect(rt_client) as ws:
        opened(ws)
        input_ = {"turn_detection": None, "format": {"type": "audio/pcm", "rate": 16000}}
        ws.send_json({"type": "session.update", "session": {"type": "transcription", "audio": {"input": input_}}})
        assert ws.receive_json()["session"]["audio"]["input"]["turn_detection"] is None
        append(ws, pcm16(spell("abc", tail_s=1.5)))  # silence: no item ends without a commit
        ws.send_json({"type": "input_audio_buffer.clear"})
        assert until(ws, "input_audio_buffer.cleared")[-1]["type"] == "input_audio_buffer.cleared"
        append(ws, pcm16(spell("hi there", tail_s=1.5)))
        ws.send_json({"type": "input_audio_buffer.commit"})
        first = until(ws, COMPLETED)
        append(ws, pcm16(spell("ok")))
        ws.send_json({"type": "input_audio_buffer.commit", "event_id": "c2"})
        second = until(ws, COMPLETED)
        ws.send_json({"type": "input_audio_buffer.commit", "event_id": "c3"})
        empty = ws.receive_json()
    for events in (first, second):
        assert not [e for e in events if e["type"].startswith("input_audio_buffer.speech")]  # server VAD only
    committed = [e for e in first + second if e["type"] == "input_audio_buffer.committed"]
    assert [e["previous_item_id"] for e in committed] == [None, committed[0]["item_id"]]
    assert [first[-1]["transcript"], second[-1]["transcript"]] == ["hi there", "ok"]
    assert empty["type"] == "error" and empty["error"]["code"] == "input_audio_buffer_commit_empty"
    assert empty["error"]["event_id"] == "c3"


def test_the_session_prompt_reaches_the_second_pass_of_its_items() -> None:
    second = FakeSecondPass("Jayme got it.")
    app = create_app(stream_settings(stream_burst_s=60.0), recognizer_factory=ToneFactory(second_pass=second))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        with connect(client) as ws:
            opened(ws)
            input_ = {"turn_detection": None, "transcription": {"prompt": "Jayme."}}
            ws.send_json({"type": "session.update", "session": {"type": "transcription", "audio": {"input": input_}}})
            assert ws.receive_json()["session"]["audio"]["input"]["transcription"]["prompt"] == "Jayme."
            append(ws, pcm16(spell("hi there", rate=RATE, tail_s=1.0)))
            ws.send_json({"type": "input_audio_buffer.commit"})
            completed = until(ws, COMPLETED)[-1]
    assert completed["transcript"] == "jayme got it" and second.prompts == ["Jayme."]


BAD_EVENTS: list[tuple[Any, str, str | None]] = [
    ("not json", "invalid_json", None),
    ({"type": "response.create"}, "invalid_value", "type"),
    ({"type": "input_audio_buffer.append", "audio": "%%%not base64%%%"}, "invalid_value", "audio"),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
    ({"type": "input_audio_buffer.commit", "extra": 1}, "unknown_parameter", "extra"),
    ({"type": "session.update", "session": {"type": "realtime"}}, "invalid_value", "session.type"),
    (
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}},
            },
        },
        "invalid_value",
        "session.audio.input.turn_detection.threshold",
    ),
    (
        {
            "type": "session.update",
            "session": {"type": "transcription", "audio": {"input": {"transcription": {"model": "gpt-9"}}}},
        },
        "invalid_value",
        "session.audio.input.transcription.model",
    ),
    (
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 60000}}},
            },
        },
        "invalid_value",
        "session.audio.input.turn_detection.silence_duration_ms",
    ),
]


def test_bad_events_get_error_events_and_the_session_goes_on(rt_client: TestClient) -> None:
    with connect(rt_client) as ws:
        opened(ws)
        for payload, code, param in BAD_EVENTS:
            if isinstance(payload, dict):
                ws.send_json({**payload, "event_id": "bad-1"})
            else:
                ws.send_text(payload)
            error = ws.receive_json()
            assert error["type"] == "error" and error["event_id"].startswith("event_"), payload
            assert error["error"]["type"] == "invalid_request_error" and error["error"]["code"] == code, error
            assert error["error"]["param"] == param and error["error"]["message"], error
            assert error["error"]["event_id"] == ("bad-1" if isinstance(payload, dict) else None)
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_json()["type"] == "error"
        append(ws, pcm16(spell("ok", rate=RATE, tail_s=0.3)))
        ws.send_json({"type": "input_audio_buffer.commit"})
        assert until(ws, COMPLETED)[-1]["transcript"] == "ok"  # still serving
    assert 'asr_errors_total{type="invalid_request_error"} 10.0' in rt_client.get("/metrics").text


def closed_with(ws: WebSocketTestSession) -> tuple[dict[str, Any], int]:
    message = ws.receive_json()
    if message["type"] == "session.created":
        message = ws.receive_json()
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return message, closed.value.code


@pytest.mark.parametrize("rt_client", [{"stream_burst_s": 2.0, "max_streams": 1}], indirect=True)
def test_the_stream_limits_apply(rt_client: TestClient) -> None:
    with connect(rt_client, "/v1/realtime") as ws:
        error, code = closed_with(ws)
    assert code == 1008 and error["error"]["code"] == "unsupported_intent"
    with connect(rt_client) as ws:
        opened(ws)
        with connect(rt_client) as second:  # ASR_MAX_STREAMS=1
            error, code = closed_with(second)
        assert code == 1013 and error["error"] == {
            "type": "server_error",
            "code": "too_many_streams",
            "message": error["error"]["message"],
            "param": None,
            "event_id": None,
        }
        append(ws, pcm16(tone(10.0, rate=RATE)), size=48000)  # 10 s at once: past the 2 s burst
        error, code = closed_with(ws)
    assert code == 1008 and error["type"] == "error" and error["error"]["code"] == "audio_too_fast"


def test_g711_matches_the_reference_codec() -> None:
    data = bytes(range(256))
    assert to_pcm16(base64.b64encode(data).decode(), PCMU) == audioop.ulaw2lin(data, 2)
    assert to_pcm16(base64.b64encode(data).decode(), PCMA) == audioop.alaw2lin(data, 2)


# The model aliases of both OpenAI routes


@pytest.fixture
def alias_client(fake: FakeFactory) -> Iterator[TestClient]:
    settings = stream_settings(model_aliases=" whisper-1, my-asr ,,")
    with TestClient(create_app(settings, recognizer_factory=fake), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def test_model_aliases_are_listed_and_accepted(alias_client: TestClient) -> None:
    models = alias_client.get("/v1/models").json()["data"]
    assert [(m["id"], m["alias_of"]) for m in models] == [
        ("fake-model", None),
        ("whisper-1", "fake-model"),
        ("my-asr", "fake-model"),
    ]
    files = {"file": ("a.wav", wav_bytes(tone(1.0)), "audio/wav")}
    for name in ("fake-model", "whisper-1", "my-asr"):
        answer = alias_client.post("/v1/audio/transcriptions", files=files, data={"model": name})
        assert answer.status_code == 200, answer.text
    refused = alias_client.post("/v1/audio/transcriptions", files=files, data={"model": "gpt-4o-transcribe"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "model_not_found"
    with connect(alias_client, URL + "&model=gpt-4o-transcribe") as ws:
        error, code = closed_with(ws)
    assert code == 1008 and error["error"]["code"] == "model_not_found" and "my-asr" in error["error"]["message"]
    with connect(alias_client, URL + "&model=my-asr") as ws:
        assert opened(ws)["audio"]["input"]["transcription"]["model"] == "my-asr"


def test_the_default_aliases(rt_client: TestClient) -> None:
    ids = [m["id"] for m in rt_client.get("/v1/models").json()["data"]]
    assert ids == ["tone-model", "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"]
