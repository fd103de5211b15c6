"""Every kind of bad input gets its status and JSON error, and the next good request works."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import wait_ready
from tests.support import FakeFactory, encode, tone, wav_bytes

GOOD = {"file": ("a.wav", wav_bytes(tone()))}


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["type"] and error["message"]
    assert "Traceback" not in error["message"]


BAD_INPUTS = [
    ("empty multipart file", {"files": {"file": ("a.wav", b"")}}, 400, "empty_body"),
    ("empty raw body", {"content": b"", "headers": {"Content-Type": "audio/wav"}}, 400, "empty_body"),
    ("truncated mp3", {"files": {"file": ("a.mp3", encode("mp3")[:200])}}, 400, "undecodable_audio"),
    ("corrupt wav", {"files": {"file": ("a.wav", b"RIFF" + b"\x00" * 300)}}, 400, "undecodable_audio"),
    ("text file", {"files": {"file": ("a.txt", b"just some text, not audio at all " * 20)}}, 415, "unsupported_format"),
    ("json body", {"content": b"{}", "headers": {"Content-Type": "application/json"}}, 415, "unsupported_content_type"),
    ("missing file field", {"files": {"audio": ("a.wav", wav_bytes(tone()))}}, 400, "missing_file"),
    (
        "pcm without rate",
        {"content": b"\x00\x01" * 100, "headers": {"Content-Type": "audio/pcm"}},
        400,
        "missing_sample_rate",
    ),
    (
        "pcm odd length",
        {"content": b"\x00" * 101, "headers": {"Content-Type": "audio/pcm;rate=16000"}},
        400,
        "undecodable_audio",
    ),
    ("zero-length wav", {"files": {"file": ("a.wav", wav_bytes(tone(0.0)))}}, 400, "zero_length_audio"),
    ("bad query", {"files": GOOD, "params": {"sample_rate": "fast"}}, 422, "invalid_parameter"),
]


@pytest.mark.parametrize("name,kwargs,status,code", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_then_good_request(client: TestClient, name: str, kwargs: dict, status: int, code: str) -> None:
    assert_error(client.post("/transcribe", **kwargs), status, code)
    good = client.post("/transcribe", files=GOOD)
    assert good.status_code == 200 and good.json()["text"] == "hello world"


BAD_OPTIONS = [("beam_size", "abc"), ("decoder", "nope"), ("word_timestamps", "maybe"), ("alternatives", "0")]


@pytest.mark.parametrize("param,value", BAD_OPTIONS)
def test_a_bad_option_has_the_documented_shape_on_both_routes(client: TestClient, param: str, value: str) -> None:
    """docs/decoding.md: 422 invalid_parameter naming the parameter, as a query (FastAPI's own
    validation) or a form field (the routers' checks)."""
    as_query = client.post("/transcribe", params={param: value}, files=GOOD)
    as_field = client.post("/transcribe", data={param: value}, files=GOOD)
    openai = client.post("/v1/audio/transcriptions", data={"model": "whisper-1", param: value}, files=GOOD)
    for response in (as_query, as_field, openai):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert set(error) == {"type", "message", "code", "param"}
        assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_parameter", param)
        assert error["message"].startswith(f"{param}: ")


def test_limits_give_413(fake: FakeFactory) -> None:
    settings = Settings(warmup=False, max_upload_bytes=50_000, max_audio_seconds=3.0)
    with TestClient(create_app(settings, recognizer_factory=fake), raise_server_exceptions=False) as client:
        wait_ready(client)
        too_big = client.post("/transcribe", files={"file": ("a.wav", wav_bytes(tone(2.0)))})
        assert_error(too_big, 413, "body_too_large")
        raw_big = client.post("/transcribe", content=b"\x00" * 60_000, headers={"Content-Type": "audio/pcm;rate=8000"})
        assert_error(raw_big, 413, "body_too_large")
        too_long = client.post("/transcribe", files={"file": ("a.mp3", encode("mp3", seconds=5.0, channels=1))})
        assert_error(too_long, 413, "audio_too_long")
        ok = client.post("/transcribe", files={"file": ("a.mp3", encode("mp3", seconds=2.0, channels=1))})
        assert ok.status_code == 200


def test_unknown_route_is_json_404(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == 404


def test_model_failure_is_500_with_error_id_and_server_recovers(client: TestClient, fake: FakeFactory) -> None:
    fake.model.fail_next = True
    response = client.post("/transcribe", files=GOOD)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "internal_error" and len(error["id"]) == 16
    assert "simulated" not in response.text  # internal text never reaches the client
    assert client.post("/transcribe", files=GOOD).status_code == 200
