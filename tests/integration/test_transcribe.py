"""POST /transcribe through the full app (lifespan, batcher, recognizer) over the fake model."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.support import FORMATS, encode, tone, wav_bytes

EXPECTED_WORDS = [("hello", 0.40, 0.76), ("world", 0.88, 1.24)]


def check_transcript(body: dict, duration: float) -> None:
    assert body["text"] == "hello world"
    assert body["model"] == "fake-model"
    assert body["duration"] == pytest.approx(duration, abs=0.06)
    assert body["processing_ms"] > 0
    got = [(w["word"], w["start"], w["end"]) for w in body["words"]]
    assert got == [(w, pytest.approx(s), pytest.approx(e)) for w, s, e in EXPECTED_WORDS]
    assert all(0.5 < w["confidence"] <= 1 for w in body["words"])


@pytest.mark.parametrize("fmt", [*FORMATS, "ogg_vorbis"])
def test_every_format_multipart(client: TestClient, fmt: str) -> None:
    data = encode(fmt, seconds=2.0)
    response = client.post("/transcribe", files={"file": (f"audio.{fmt}", data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    check_transcript(response.json(), 2.0)


@pytest.mark.parametrize("fmt,mime", [("wav", "audio/wav"), ("mp3", "audio/mpeg"), ("ogg_opus", "audio/ogg")])
def test_raw_body_with_audio_content_type(client: TestClient, fmt: str, mime: str) -> None:
    response = client.post("/transcribe", content=encode(fmt), headers={"Content-Type": mime})
    assert response.status_code == 200, response.text
    check_transcript(response.json(), 2.0)


def test_raw_pcm_with_rate_parameter_and_query(client: TestClient) -> None:
    pcm = (tone(2.0, 8000) * 32767).astype("<i2").tobytes()
    by_param = client.post("/transcribe", content=pcm, headers={"Content-Type": "audio/pcm;rate=8000"})
    by_query = client.post("/transcribe?sample_rate=8000", content=pcm, headers={"Content-Type": "audio/l16"})
    for response in (by_param, by_query):
        assert response.status_code == 200, response.text
        check_transcript(response.json(), 2.0)


def test_stereo_pcm_channels_parameter(client: TestClient) -> None:
    pcm = (tone(2.0, 16000, channels=2) * 32767).astype("<i2").tobytes()
    response = client.post("/transcribe", content=pcm, headers={"Content-Type": "audio/pcm;rate=16000;channels=2"})
    assert response.status_code == 200
    assert response.json()["duration"] == pytest.approx(2.0)


def test_request_id_is_echoed_and_generated(client: TestClient) -> None:
    response = client.post(
        "/transcribe", files={"file": ("a.wav", wav_bytes(tone()))}, headers={"X-Request-ID": "abc-123"}
    )
    assert response.headers["x-request-id"] == "abc-123"
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32


def test_short_audio_gives_empty_transcript(client: TestClient) -> None:
    response = client.post("/transcribe", files={"file": ("a.wav", wav_bytes(tone(0.2)))})
    assert response.status_code == 200
    assert response.json()["text"] == "" and response.json()["words"] == []


def test_concurrent_requests_share_batches(client: TestClient, fake) -> None:
    from concurrent.futures import ThreadPoolExecutor

    fake.model.batch_sizes.clear()
    audios = [wav_bytes(tone(1.5 + 0.1 * i)) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda a: client.post("/transcribe", files={"file": ("a.wav", a)}), audios))
    assert all(r.status_code == 200 for r in responses)
    durations = [r.json()["duration"] for r in responses]
    assert durations == pytest.approx([1.5 + 0.1 * i for i in range(8)], abs=0.01)  # results map back
    assert sum(fake.model.batch_sizes) == 8
    assert len(fake.model.batch_sizes) < 8, fake.model.batch_sizes


def test_long_audio_is_cut_and_stitched_with_monotone_times(client: TestClient) -> None:
    wave = np.concatenate([tone(2.0), np.zeros(16000 * 19, dtype=np.float32), tone(2.0), np.zeros(16000, np.float32)])
    response = client.post("/transcribe", files={"file": ("long.wav", wav_bytes(wave))})
    assert response.status_code == 200
    words = response.json()["words"]
    assert [w["word"] for w in words] == ["hello", "world"] * 2
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    # The cut lands at the first quiet window of the 2 s before 20 s: 18.0 s; times shift by it.
    assert starts[2] == pytest.approx(18.4) and words[3]["end"] == pytest.approx(18.0 + 1.24)
