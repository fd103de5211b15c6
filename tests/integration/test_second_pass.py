"""decoder=attention: the second pass's text, with word times from CTC alignment, through the app
(over the fake model and a fake second pass; the real one is tested in tests/unit/test_whisper.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import wait_ready
from tests.integration.test_stream import CHUNK, collect, metric, stream_settings
from tests.streaming_support import ToneFactory, chunks, pcm16, spell
from tests.support import FakeFactory, FakeSecondPass, tone, wait_for, wav_bytes


@pytest.fixture
def second_pass_fake() -> FakeFactory:
    return FakeFactory(second_pass_text="Hello, World!")


@pytest.fixture
def second_client(second_pass_fake: FakeFactory, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, recognizer_factory=second_pass_fake)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def post(client: TestClient, audio: np.ndarray, **params: str) -> httpx.Response:
    return client.post("/transcribe", params=params, files={"file": ("a.wav", wav_bytes(audio), "audio/wav")})


def test_default_is_the_second_pass_with_ctc_word_times(
    second_client: TestClient, second_pass_fake: FakeFactory
) -> None:
    audio = tone(2.0)
    attention = post(second_client, audio).json()
    greedy = post(second_client, audio, decoder="greedy").json()
    assert attention["text"] == greedy["text"] == "hello world"  # "Hello, World!" in the server's form
    assert attention["words"] == greedy["words"]  # aligned on the frames greedy decoding reads
    assert second_pass_fake.second_pass is not None and len(second_pass_fake.second_pass.batches) == 1
    assert second_pass_fake.second_pass.ctc_frames == [[50]]  # its CTC frames (2 s at 25 a second), to guide it
    models = second_client.get("/v1/models").json()["data"][0]
    assert models["decoders"] == ["greedy", "attention"] and models["default_decoder"] == "attention"
    openai = second_client.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav_bytes(audio))}, data={})
    assert openai.status_code == 200 and openai.json()["text"] == "hello world"


def test_second_pass_text_differs_from_ctc(settings: Settings) -> None:
    fake = FakeFactory(second_pass_text="Hello 2 worlds.")
    with TestClient(create_app(settings, recognizer_factory=fake), raise_server_exceptions=False) as client:
        wait_ready(client)
        body = post(client, tone(2.0), decoder="attention").json()
    assert body["text"] == "hello two worlds"
    starts = [w["start"] for w in body["words"]]
    assert [w["word"] for w in body["words"]] == ["hello", "two", "worlds"] and starts == sorted(starts)
    assert all(0.0 <= w["start"] < w["end"] <= 2.0 for w in body["words"])


def test_the_prompt_reaches_the_second_pass_from_every_route(
    second_client: TestClient, second_pass_fake: FakeFactory
) -> None:
    fake = second_pass_fake.second_pass
    assert fake is not None
    audio = wav_bytes(tone(2.0))
    assert post(second_client, tone(2.0), prompt="Jayme, kubelet.").status_code == 200
    form = {"prompt": "Meeting notes."}
    openai = second_client.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)}, data=form)
    assert openai.status_code == 200
    greedy = post(second_client, tone(2.0), decoder="greedy", prompt="Not read by CTC.")
    assert greedy.status_code == 200 and greedy.json()["text"] == "hello world"
    assert fake.prompts == ["Jayme, kubelet.", "Meeting notes."]  # the CTC request had no second pass
    too_long = post(second_client, tone(1.0), prompt="x" * 1001)
    assert too_long.status_code == 422 and too_long.json()["error"]["param"] == "prompt"


def test_the_server_s_prompt_stands_in_for_a_request_s_missing_one(settings: Settings) -> None:
    fake = FakeFactory(second_pass_text="Hello, World!")
    app = create_app(settings.model_copy(update={"prompt": "Grafana, kubelet."}), recognizer_factory=fake)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        assert post(client, tone(1.0)).status_code == 200
        assert post(client, tone(1.0), prompt="Own words.", hotwords="jayme").status_code == 200
    assert fake.second_pass is not None and fake.second_pass.prompts == ["Grafana, kubelet.", "Own words. Jayme."]


def test_beam_options_are_refused_with_attention_and_hotwords_join_its_prompt(
    second_client: TestClient, second_pass_fake: FakeFactory
) -> None:
    response = post(second_client, tone(1.0), decoder="attention", beam_size="8")
    assert response.status_code == 422 and response.json()["error"]["param"] == "beam_size"
    assert post(second_client, tone(1.0), hotwords="zebra:5", prompt="Animals.").status_code == 200
    assert second_pass_fake.second_pass is not None
    assert second_pass_fake.second_pass.prompts == ["Animals. Zebra."]  # the default decoder read them


def test_attention_needs_a_second_pass(client: TestClient) -> None:
    response = post(client, tone(1.0), decoder="attention")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "no_second_pass"
    assert post(client, tone(2.0)).json()["text"] == "hello world"  # the default stays CTC


def test_concurrent_requests_share_a_second_pass_batch(second_pass_fake: FakeFactory) -> None:
    settings = Settings(warmup=False, max_wait_ms=50, log_json=False, model_workers=1)
    gate = threading.Event()
    second_pass_fake.model.gate = gate
    files = {"file": ("a.wav", wav_bytes(tone(2.0)), "audio/wav")}
    with TestClient(create_app(settings, recognizer_factory=second_pass_fake), raise_server_exceptions=False) as client:
        wait_ready(client)
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(client.post, "/transcribe", files=files)  # holds the model
            wait_for(lambda: second_pass_fake.model.batch_sizes == [1], 10, "the first request did not reach the model")
            queued = [pool.submit(client.post, "/transcribe", files=files) for _ in range(3)]
            wait_for(lambda: metric(client, "asr_queue_depth_audio_seconds") == 6.0, 10, "the others were not queued")
            gate.set()
            responses = [first.result(), *(f.result() for f in queued)]
    assert [r.status_code for r in responses] == [200] * 4
    assert {r.json()["text"] for r in responses} == {"hello world"}
    assert second_pass_fake.second_pass is not None
    assert [size for size, _ in second_pass_fake.second_pass.batches] == [1, 3]


def test_long_audio_reaches_the_second_pass_in_pieces_under_30_s(settings: Settings) -> None:
    fake = FakeFactory(second_pass_text="hello")
    with TestClient(create_app(settings, recognizer_factory=fake), raise_server_exceptions=False) as client:
        wait_ready(client)
        body = post(client, tone(70.0)).json()
    assert fake.second_pass is not None
    pieces = sum(size for size, _ in fake.second_pass.batches)
    assert pieces >= 3 and all(frames <= 2500 for _, frames in fake.second_pass.batches)
    assert body["text"] == " ".join(["hello"] * pieces)
    assert [w["start"] for w in body["words"]] == sorted(w["start"] for w in body["words"])


def test_stream_finals_come_from_the_second_pass() -> None:
    second = FakeSecondPass("Well, hello!")
    app = create_app(stream_settings(), recognizer_factory=ToneFactory(second_pass=second))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        with client.websocket_connect("/stream") as ws:
            ws.send_json({"type": "config", "sample_rate": 16000, "encoding": "pcm_s16le"})
            for piece in chunks(pcm16(spell("hello world", tail_s=0.5)), CHUNK):
                ws.send_bytes(piece)
            ws.send_text('{"type": "eof"}')
            messages, code = collect(ws)
    assert code == 1000
    partials = [m["text"] for m in messages if m["type"] == "partial"]
    finals = [m for m in messages if m["type"] == "final"]
    assert partials and all("well" not in p for p in partials)  # partials stay CTC
    assert [f["text"] for f in finals] == ["well hello"] and [w["word"] for w in finals[0]["words"]] == [
        "well",
        "hello",
    ]
    assert second.batches


def test_a_stream_s_config_can_ask_for_ctc_finals() -> None:
    second = FakeSecondPass("Well, hello!")
    app = create_app(stream_settings(), recognizer_factory=ToneFactory(second_pass=second))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        with client.websocket_connect("/stream") as ws:
            ws.send_json({"type": "config", "decoding": {"decoder": "greedy"}})
            for piece in chunks(pcm16(spell("hello world", tail_s=0.5)), CHUNK):
                ws.send_bytes(piece)
            ws.send_text('{"type": "eof"}')
            messages, code = collect(ws)
    assert code == 1000
    assert [m["text"] for m in messages if m["type"] == "final"] == ["hello world"] and not second.batches


def test_stream_finals_can_stay_ctc() -> None:
    second = FakeSecondPass("Well, hello!")
    settings = stream_settings(stream_final_decoder="greedy")
    app = create_app(settings, recognizer_factory=ToneFactory(second_pass=second))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        with client.websocket_connect("/stream") as ws:
            for piece in chunks(pcm16(spell("hello world", tail_s=0.5)), CHUNK):
                ws.send_bytes(piece)
            ws.send_text('{"type": "eof"}')
            messages, code = collect(ws)
    assert code == 1000
    assert [m["text"] for m in messages if m["type"] == "final"] == ["hello world"] and not second.batches
