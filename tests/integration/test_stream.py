"""WS /stream through the full app over a fake model that reads tones (tests/streaming_support.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from app.config import Settings
from app.main import create_app
from tests.conftest import wait_ready
from tests.streaming_support import ToneFactory, chunks, live_server, pcm16, spell
from tests.support import FakeFactory, wait_for, wav_bytes

CHUNK = 3200  # 100 ms of 16 kHz s16le
LM_DIR = Path(__file__).resolve().parents[2] / "models" / "en-small" / "lm"  # its lexicon lacks "kubelet"


def stream_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "warmup": False,
        "max_wait_ms": 5,
        "log_json": False,
        "stream_partial_interval_s": 0.3,
        "stream_idle_timeout_s": 10,
        "stream_vad": "energy",  # the tone model's bursts are loud, not speech: Silero hears none
    }
    return Settings(**{**base, **overrides})


@pytest.fixture
def tones() -> ToneFactory:
    return ToneFactory()


@pytest.fixture
def stream_client(tones: ToneFactory, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    overrides = getattr(request, "param", {})
    app = create_app(stream_settings(**overrides), recognizer_factory=tones)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def collect(ws: WebSocketTestSession) -> tuple[list[dict[str, Any]], int]:
    """Every message until the server closes; and the close code."""
    messages = []
    while True:
        try:
            messages.append(ws.receive_json())
        except WebSocketDisconnect as exc:
            return messages, exc.code


def metric(client: TestClient, name: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_partials_then_finals_equal_offline(stream_client: TestClient) -> None:
    audio = spell("hello world", tail_s=0.8)
    audio = np.concatenate([audio, spell("abc", lead_s=0.0)])
    data = pcm16(audio)
    with stream_client.websocket_connect("/stream") as ws:
        ws.send_json({"type": "config", "sample_rate": 16000, "encoding": "pcm_s16le"})
        first_word = int((0.3 + 5 * 0.2 + 0.1) * 16000) * 2
        for piece in chunks(data[:first_word], CHUNK):
            ws.send_bytes(piece)
        partial = ws.receive_json()  # the server speaks while audio still comes
        assert partial["type"] == "partial" and "hello".startswith(partial["text"]), partial
        for piece in chunks(data[first_word:], CHUNK):
            ws.send_bytes(piece)
        ws.send_text('{"type": "eof"}')
        messages, code = collect(ws)
    assert code == 1000
    kinds = [m["type"] for m in messages]
    assert kinds[-1] == "final" and "partial" in kinds
    finals = [m for m in messages if m["type"] == "final"]
    assert [f["text"] for f in finals] == ["hello world", "abc"]
    offline = stream_client.post("/transcribe", files={"file": ("a.wav", wav_bytes(audio))}).json()
    assert " ".join(f["text"] for f in finals) == offline["text"] == "hello world abc"
    streamed_words = [(w["word"], w["start"], w["end"]) for f in finals for w in f["words"]]
    assert streamed_words == [(w["word"], w["start"], w["end"]) for w in offline["words"]]
    assert finals[0]["start"] == 0.0 and finals[0]["end"] <= finals[1]["start"] < finals[1]["end"]
    assert metric(stream_client, "asr_stream_finals_total") == 2
    assert metric(stream_client, "asr_stream_partial_latency_seconds_count") >= 1
    assert metric(stream_client, "asr_stream_first_partial_seconds_count") == 1
    assert 'asr_stream_closes_total{code="1000"} 1.0' in stream_client.get("/metrics").text


def test_no_config_takes_defaults_and_eof_tolerates_whitespace(stream_client: TestClient) -> None:
    with stream_client.websocket_connect("/stream") as ws:
        for piece in chunks(pcm16(spell("hi there")), 16000):
            ws.send_bytes(piece)
        ws.send_text('  \n{ "type" :  "eof" }\t ')
        messages, code = collect(ws)
    assert code == 1000
    finals = [m for m in messages if m["type"] == "final"]
    assert [f["text"] for f in finals] == ["hi there"]
    assert [w["word"] for w in finals[0]["words"]] == ["hi", "there"]


def test_resampled_float_audio_without_partials_or_words(stream_client: TestClient) -> None:
    from app.asr.resample import resample

    audio = resample(spell("echo"), 16000, 44100)
    config = {
        "type": "config",
        "sample_rate": 44100,
        "encoding": "pcm_f32le",
        "interim_results": False,
        "word_timestamps": False,
        "endpointing": {"silence_ms": 300},
    }
    with stream_client.websocket_connect("/stream") as ws:
        ws.send_text(json.dumps(config))
        for piece in chunks(audio.astype("<f4").tobytes(), 8821):  # pieces end inside samples
            ws.send_bytes(piece)
        ws.send_json({"type": "eof"})
        messages, code = collect(ws)
    assert code == 1000
    # The last tone ends at 1.02 s; 300 ms of silence later the utterance ends (the rest is silence).
    expected = {"type": "final", "text": "echo", "start": 0.0, "end": pytest.approx(1.35, abs=0.03), "words": []}
    assert messages == [expected]


def test_long_utterance_is_cut_in_a_pause(stream_client: TestClient) -> None:
    config = {"type": "config", "interim_results": False, "endpointing": {"max_utterance_s": 1.5}}
    with stream_client.websocket_connect("/stream") as ws:
        ws.send_json(config)
        for piece in chunks(pcm16(spell("abcdefghijkl")), CHUNK):
            ws.send_bytes(piece)
        ws.send_json({"type": "eof"})
        messages, code = collect(ws)
    assert code == 1000
    assert len(messages) >= 2 and "".join(m["text"] for m in messages) == "abcdefghijkl"
    assert all(m["end"] - m["start"] <= 1.5 + 0.1 for m in messages[:-1])
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(messages))


def test_eof_without_speech_closes_without_a_final(stream_client: TestClient) -> None:
    with stream_client.websocket_connect("/stream") as ws:
        ws.send_json({"type": "config"})
        ws.send_bytes(pcm16(np.zeros(16000, np.float32)))
        ws.send_json({"type": "eof"})
        assert collect(ws) == ([], 1000)
    with stream_client.websocket_connect("/stream") as ws:
        ws.send_json({"type": "eof"})
        assert collect(ws) == ([], 1000)


@pytest.mark.parametrize(
    "config,problem",
    [
        ({"type": "config", "sample_rate": "fast"}, "sample_rate"),
        ({"type": "config", "encoding": "mp3"}, "encoding"),
        ({"type": "config", "languages": ["en"]}, "languages"),
        ({"type": "config", "endpointing": {"silence_ms": 60000}}, "silence_ms"),
        ({"type": "config", "endpointing": {"max_utterance_s": 0.5}}, "max_utterance_s"),
        ({"type": "config", "decoding": {"beam_size": 0}}, "beam_size"),
        ({"type": "config", "decoding": {"alternatives": 2}}, "alternatives"),
        ({"type": "config", "decoding": {"decoder": "greedy", "hotwords": ["kubelet"]}}, "hotwords needs decoder=beam"),
        ({"type": "config", "decoding": {"decoder": "beam", "hotwords": ["kubelet:99"]}}, "boost"),
    ],
)
def test_malformed_config_closes_1008(stream_client: TestClient, config: dict[str, Any], problem: str) -> None:
    with stream_client.websocket_connect("/stream") as ws:
        ws.send_json(config)
        messages, code = collect(ws)
    assert code == 1008
    assert messages[0]["type"] == "error" and messages[0]["code"] == "invalid_config"
    assert problem in messages[0]["message"]


def test_a_decoder_the_model_lacks_closes_1008_with_the_error_table_s_code(stream_client: TestClient) -> None:
    with stream_client.websocket_connect("/stream") as ws:
        ws.send_json({"type": "config", "decoding": {"hotwords": ["kubelet"]}})  # beam, and there is no LM
        messages, code = collect(ws)
    assert code == 1008
    assert messages[0]["code"] == "no_language_model" and messages[0]["error"]["type"] == "invalid_request_error"


def first_partial(client: TestClient, word: str, decoding: dict[str, Any] | None = None) -> str:
    """The partial of a stream's first step: the audio of ``word`` arrives in one message, so
    that step reads all of it."""
    with client.websocket_connect("/stream") as ws:
        ws.send_json({"type": "config", **({"decoding": decoding} if decoding else {})})
        ws.send_bytes(pcm16(spell(word, tail_s=0.1)))
        partial = ws.receive_json()
        ws.send_text('{"type": "eof"}')
        messages, code = collect(ws)
    assert code == 1000 and partial["type"] == "partial" and messages[-1]["type"] == "final"
    return str(partial["text"])


@pytest.mark.parametrize("stream_client", [{"lm_path": LM_DIR}], indirect=True)
def test_partials_are_beam_searched_with_the_stream_s_hotwords_when_the_model_has_an_lm(
    stream_client: TestClient,
) -> None:
    assert stream_client.get("/v1/models").json()["data"][0]["serving"]["stream_partial_decoder"] == "beam"
    plain = first_partial(stream_client, "kubelet")  # greedy would spell "kubelet" (the test below)
    assert plain and "kubelet" not in plain.split()  # the lexicon's words only
    assert first_partial(stream_client, "kubelet", {"hotwords": ["kubelet"]}) == "kubelet"


@pytest.mark.parametrize("stream_client", [{"lm_path": LM_DIR, "stream_partial_decoder": "greedy"}], indirect=True)
def test_greedy_partials_spell_what_the_model_hears(stream_client: TestClient) -> None:
    assert stream_client.get("/v1/models").json()["data"][0]["serving"]["stream_partial_decoder"] == "greedy"
    assert first_partial(stream_client, "kubelet") == "kubelet"


def test_config_after_audio_closes_1008(stream_client: TestClient) -> None:
    with stream_client.websocket_connect("/stream") as ws:
        ws.send_bytes(pcm16(np.zeros(1600, np.float32)))
        ws.send_json({"type": "config"})
        messages, code = collect(ws)
    assert code == 1008 and "first message" in messages[0]["message"]


@pytest.mark.parametrize("text", ['{"type": "pause"}', "eof", "[1, 2]", '{"kind": "eof"}'])
def test_unknown_or_malformed_text_messages_close_1003(stream_client: TestClient, text: str) -> None:
    with stream_client.websocket_connect("/stream") as ws:
        ws.send_text(text)
        messages, code = collect(ws)
    assert code == 1003
    assert messages[0]["type"] == "error" and messages[0]["code"] in {"unknown_message_type", "invalid_message"}


@pytest.mark.parametrize("stream_client", [{"stream_max_message_bytes": 32000}], indirect=True)
def test_oversized_message_closes_1009(stream_client: TestClient) -> None:
    with stream_client.websocket_connect("/stream") as ws:
        ws.send_bytes(b"\0" * 32000)  # at the limit: accepted
        ws.send_bytes(b"\0" * 32002)
        messages, code = collect(ws)
    assert code == 1009 and messages[0]["code"] == "message_too_big"


@pytest.mark.parametrize("stream_client", [{"stream_idle_timeout_s": 0.3}], indirect=True)
def test_idle_stream_gets_its_final_then_closes_1008(stream_client: TestClient) -> None:
    with stream_client.websocket_connect("/stream") as ws:
        ws.send_bytes(pcm16(spell("ok", tail_s=0.1)))
        messages, code = collect(ws)
    assert code == 1008
    assert [m["type"] for m in messages][-2:] == ["final", "error"]
    assert messages[-2]["text"] == "ok" and messages[-1]["code"] == "idle_timeout"


@pytest.mark.parametrize("stream_client", [{"stream_max_session_s": 1.0}], indirect=True)
def test_stream_at_its_time_limit_gets_its_final_then_closes_1008(stream_client: TestClient) -> None:
    with stream_client.websocket_connect("/stream") as ws:
        ws.send_bytes(pcm16(spell("yes", tail_s=0.1)))
        messages, code = collect(ws)
    assert code == 1008
    assert [(m["type"], m.get("text"), m.get("code")) for m in messages][-2:] == [
        ("final", "yes", None),
        ("error", None, "session_too_long"),
    ]


@pytest.mark.parametrize("stream_client", [{"max_streams": 2}], indirect=True)
def test_streams_beyond_the_limit_close_1013(stream_client: TestClient) -> None:
    with stream_client.websocket_connect("/stream") as first, stream_client.websocket_connect("/stream") as second:
        wait_for(lambda: metric(stream_client, "asr_active_streams") == 2, 10, "the two streams did not open")
        with stream_client.websocket_connect("/stream") as third:
            messages, code = collect(third)
        assert code == 1013 and messages[0]["code"] == "too_many_streams"
        for ws in (first, second):
            ws.send_json({"type": "eof"})
            assert collect(ws) == ([], 1000)
    assert metric(stream_client, "asr_rejected_requests_total") >= 1


def test_stream_before_the_model_is_ready_closes_1013() -> None:
    fake = FakeFactory(load_delay_s=30)
    app = create_app(stream_settings(), recognizer_factory=fake)
    with TestClient(app) as client:
        with client.websocket_connect("/stream") as ws:
            messages, code = collect(ws)
        fake.release.set()
    assert code == 1013 and messages[0]["code"] == "not_ready"


async def _stream_phrase(base: str, text: str) -> list[str]:
    """Stream spelled ``text`` as fast as possible; the finals' texts."""
    async with websockets.connect(f"ws://{base}/stream") as ws:
        await ws.send(json.dumps({"type": "config", "sample_rate": 16000}))
        for piece in chunks(pcm16(spell(text)), 6400):
            await ws.send(piece)
        await ws.send(json.dumps({"type": "eof"}))
        finals = [m["text"] async for m in _messages(ws) if m["type"] == "final"]
        assert ws.close_code == 1000
        return finals


async def _messages(ws: websockets.ClientConnection) -> Any:
    async for raw in ws:
        yield json.loads(raw)


def test_fifty_concurrent_streams_get_their_own_finals(tones: ToneFactory) -> None:
    firsts = ["alpha", "bravo", "delta", "echo", "golf", "hotel", "india", "kilo", "lima", "mike"]
    seconds = ["oscar", "papa", "romeo", "sierra", "tango"]
    phrases = [f"{a} {b}" for b in seconds for a in firsts]
    app = create_app(stream_settings(max_batch_size=32), recognizer_factory=tones)

    async def run_all(base: str) -> list[list[str]]:
        return await asyncio.gather(*(_stream_phrase(base, p) for p in phrases))

    with live_server(app) as (base, _):
        wait_for_ready(base)
        tones.model.batch_sizes.clear()
        results = asyncio.run(run_all(base))
        gauge = httpx.get(f"http://{base}/metrics").text
    assert results == [[p] for p in phrases]
    assert max(tones.model.batch_sizes) > 1  # windows of different streams share batches
    assert "asr_active_streams 0.0" in gauge


def wait_for_ready(base: str) -> None:
    wait_for(lambda: httpx.get(f"http://{base}/readyz").status_code == 200, 30, "server not ready")


def test_abrupt_disconnect_frees_the_stream(tones: ToneFactory) -> None:
    app = create_app(stream_settings(), recognizer_factory=tones)

    async def vanish(base: str) -> dict[str, Any]:
        ws = await websockets.connect(f"ws://{base}/stream")
        for piece in chunks(pcm16(spell("hello world", tail_s=0.0)), CHUNK):
            await ws.send(piece)
        partial = json.loads(await ws.recv())
        ws.transport.abort()  # no close frame: the client just vanishes
        return dict(partial)

    with live_server(app) as (base, _):
        wait_for_ready(base)
        partial = asyncio.run(vanish(base))
        wait_for(
            lambda: "asr_active_streams 0.0" in httpx.get(f"http://{base}/metrics").text, 10, "the stream was not freed"
        )
        text = httpx.get(f"http://{base}/metrics").text
    assert partial["type"] == "partial"
    # No close frame: uvicorn reports 1006 (legacy websockets) or 1005 (sans-I/O) to the app.
    assert re.search(r'asr_stream_closes_total\{code="100[56]"\} 1.0', text), text


def test_shutdown_sends_finals_then_closes_1001(tones: ToneFactory) -> None:
    app = create_app(stream_settings(), recognizer_factory=tones)

    async def interrupted(base: str, stop: Any) -> tuple[list[dict[str, Any]], int | None]:
        async with websockets.connect(f"ws://{base}/stream") as ws:
            for piece in chunks(pcm16(spell("bye now", tail_s=0.0)), CHUNK):
                await ws.send(piece)
            messages = [json.loads(await ws.recv())]  # a partial: the stream is live
            stop()
            messages += [m async for m in _messages(ws)]
            return messages, ws.close_code

    with live_server(app) as (base, server):
        wait_for_ready(base)
        messages, code = asyncio.run(interrupted(base, lambda: server.handle_exit(signal.SIGTERM, None)))
    assert code == 1001
    assert messages[0]["type"] == "partial"
    assert messages[-1]["type"] == "final" and messages[-1]["text"] == "bye now"
