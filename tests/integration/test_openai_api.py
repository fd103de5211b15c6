"""The OpenAI-compatible route and the decoding options, in-process over the fake model with the shipped LM."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import wait_ready
from tests.support import FakeFactory, tone, wav_bytes

LM_DIR = Path(__file__).resolve().parents[2] / "models" / "en-small" / "lm"
ROUTE = "/v1/audio/transcriptions"
SRT_CUE = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+)\n")
VTT_CUE = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\n(.+)\n")


@pytest.fixture(scope="module")
def beam_client() -> Iterator[TestClient]:
    """The app over the fake model with the shipped LM; long audio is cut into 2 s pieces, each saying
    "hello world" at 0.4-1.24 s, so there is a pause between pieces."""
    settings = Settings(warmup=False, max_wait_ms=5, log_json=False, lm_path=LM_DIR, chunk_seconds=4.0)
    app = create_app(settings, recognizer_factory=FakeFactory())
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def post(client: TestClient, seconds: float = 2.0, **fields: Any) -> Any:
    return client.post(ROUTE, files={"file": ("a.wav", wav_bytes(tone(seconds)), "audio/wav")}, data=fields)


def seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def assert_monotone(spans: list[tuple[float, float]]) -> None:
    assert spans
    for start, end in spans:
        assert 0 <= start < end
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start


def test_json_and_text(beam_client: TestClient) -> None:
    r = post(beam_client, model="whisper-1")
    assert r.status_code == 200 and r.json() == {"text": "hello world", "usage": {"type": "duration", "seconds": 2}}
    r = post(beam_client, response_format="text", language="en")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain") and r.text == "hello world\n"


def test_srt_parses_with_monotone_times_on_long_audio(beam_client: TestClient) -> None:
    r = post(beam_client, seconds=9.0, response_format="srt")
    assert r.status_code == 200
    cues = SRT_CUE.findall(r.text)
    assert len(cues) >= 3 and SRT_CUE.sub("", r.text).strip() == ""
    assert [int(c[0]) for c in cues] == list(range(1, len(cues) + 1))
    assert all(c[9] == "hello world" for c in cues)
    assert_monotone([(seconds(*c[1:5]), seconds(*c[5:9])) for c in cues])


def test_vtt_parses_with_monotone_times(beam_client: TestClient) -> None:
    r = post(beam_client, seconds=9.0, response_format="vtt")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/vtt")
    assert r.text.startswith("WEBVTT\n\n")
    cues = VTT_CUE.findall(r.text)
    assert len(cues) >= 3 and VTT_CUE.sub("", r.text.removeprefix("WEBVTT\n")).strip() == ""
    assert_monotone([(seconds(*c[0:4]), seconds(*c[4:8])) for c in cues])


def test_verbose_json_segments_and_words(beam_client: TestClient) -> None:
    r = beam_client.post(
        ROUTE,
        files=[
            ("file", ("a.wav", wav_bytes(tone(9.0)), "audio/wav")),
            ("response_format", (None, "verbose_json")),
            ("timestamp_granularities[]", (None, "word")),
            ("timestamp_granularities[]", (None, "segment")),
        ],
    )
    assert r.status_code == 200
    body = r.json()
    assert body["task"] == "transcribe" and body["language"] == "english" and body["duration"] == 9.0
    segments, words = body["segments"], body["words"]
    assert len(segments) >= 3 and [s["id"] for s in segments] == list(range(len(segments)))
    assert " ".join(s["text"] for s in segments) == body["text"]
    assert_monotone([(s["start"], s["end"]) for s in segments])
    assert_monotone([(w["start"], w["end"]) for w in words])
    assert [w["word"] for w in words] == body["text"].split()
    only_segments = post(beam_client, response_format="verbose_json").json()
    assert "words" not in only_segments and only_segments["segments"]


def test_stream_sends_deltas_then_done(beam_client: TestClient) -> None:
    r = post(beam_client, seconds=6.0, stream="true")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line.removeprefix("data: ")) for line in r.text.split("\n\n") if line]
    assert [e["type"] for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "transcript.text.done"
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"]
    assert events[-1]["text"].startswith("hello world hello world")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": "xml"}, "response_format"),
        ({"temperature": "2"}, "temperature"),
        ({"language": "fr"}, "language"),
        ({"model": "gpt-9-transcribe"}, "model"),  # not in ASR_MODEL_ALIASES
        ({"stream": "true", "response_format": "srt"}, "stream"),
        ({"timestamp_granularities[]": "word"}, "timestamp_granularities[]"),
        ({"beam_size": "0"}, "beam_size"),
        ({"beam_size": "100000"}, "beam_size"),
        ({"alternatives": "50"}, "alternatives"),
        ({"decoder": "viterbi"}, "decoder"),
        ({"decoder": "greedy", "hotwords": "kubelet"}, "hotwords"),
    ],
)
def test_bad_options_are_rejected_with_the_parameter_named(
    beam_client: TestClient, fields: dict[str, str], param: str
) -> None:
    r = post(beam_client, **fields)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and param in error["message"]


def test_too_many_hotwords(beam_client: TestClient) -> None:
    many = ",".join(f"word{i}" for i in range(101))
    wav = {"content": wav_bytes(tone(1.0)), "headers": {"content-type": "audio/wav"}}
    for r in (post(beam_client, hotwords=many), beam_client.post("/transcribe", params={"hotwords": many}, **wav)):
        assert r.status_code == 422 and "at most 100 hotwords" in r.json()["error"]["message"]


def test_transcribe_options(beam_client: TestClient) -> None:
    wav = wav_bytes(tone(2.0))
    audio = {"content": wav, "headers": {"content-type": "audio/wav"}}
    r = beam_client.post("/transcribe", params={"alternatives": 3}, **audio)
    body = r.json()
    assert r.status_code == 200 and body["text"] == "hello world"
    assert body["alternatives"][0]["text"] == "hello world" and len(body["alternatives"]) >= 2
    assert body["alternatives"][0]["score"] >= body["alternatives"][1]["score"]
    r = beam_client.post("/transcribe", params={"decoder": "greedy", "word_timestamps": "false"}, **audio)
    assert r.status_code == 200 and r.json()["words"] == [] and "alternatives" not in r.json()
    form = {"decoder": "beam", "beam_size": "8", "lm_weight": "0.5", "word_score": "1", "hotwords": ["kubelet:5"]}
    r = beam_client.post("/transcribe", files={"file": ("a.wav", wav)}, data=form)
    assert r.status_code == 200 and r.json()["text"] == "hello world"
    assert [w["word"] for w in r.json()["words"]] == ["hello", "world"]
    r = beam_client.post("/transcribe", files={"file": ("a.wav", wav)}, data={"beam_size": "-1"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "beam_size"
    r = beam_client.post("/transcribe", params={"lm_weight": "11"}, **audio)
    assert r.status_code == 422 and "lm_weight" in r.json()["error"]["message"]


def test_beam_without_a_language_model_is_a_clear_400(client: TestClient) -> None:
    wav = {"content": wav_bytes(tone(1.0)), "headers": {"content-type": "audio/wav"}}
    r = client.post("/transcribe", params={"decoder": "beam"}, **wav)
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_language_model"
    r = client.post(ROUTE, files={"file": ("a.wav", wav_bytes(tone(1.0)))}, data={"alternatives": "2"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_language_model"
    r = client.post(ROUTE, files={"file": ("a.wav", wav_bytes(tone(2.0)))})
    assert r.status_code == 200 and r.json()["text"] == "hello world"  # greedy by default without an LM
