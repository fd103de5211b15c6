"""A file that ends early is transcribed as far as it decodes, and the answer says it was cut
(``X-Audio-Truncated: true``); a file with nothing decodable is still 400 (README, "Errors")."""

from __future__ import annotations

import struct

import pytest
from fastapi.testclient import TestClient

from app.asr import audio, wav
from tests.support import encode, tone, wav_bytes

FOUR_SECONDS = wav_bytes(tone(4.0))


def _streamed(wav: bytes, size: int) -> bytes:
    """``wav`` with its audio chunk's size field set to ``size``, as a streaming writer leaves it."""
    out = bytearray(wav)
    struct.pack_into("<I", out, out.index(b"data") + 4, size)
    return bytes(out)


CUT = {  # name: (bytes, seconds that decode)
    "wav cut in half": (FOUR_SECONDS[: len(FOUR_SECONDS) // 2], 2.0),
    "flac cut at 60 %": (encode("flac", seconds=4.0)[: int(len(encode("flac", seconds=4.0)) * 0.6)], None),
}


@pytest.mark.parametrize("name", list(CUT))
@pytest.mark.parametrize("route", ["/transcribe", "/v1/audio/transcriptions"])
def test_cut_file_keeps_what_decodes_and_says_so(client: TestClient, name: str, route: str) -> None:
    data, seconds = CUT[name]
    form = {"model": "whisper-1", "response_format": "verbose_json"} if route.startswith("/v1") else None
    response = client.post(route, files={"file": ("a", data)}, data=form)
    assert response.status_code == 200, response.text
    assert response.headers.get("x-audio-truncated") == "true"
    duration = response.json()["duration"]
    assert 0.5 < duration < 4.0
    if seconds is not None:
        assert duration == pytest.approx(seconds, abs=0.05)


@pytest.mark.parametrize(
    "name,data",
    [
        ("whole wav", FOUR_SECONDS),
        ("streamed wav, size 0xFFFFFFFF", _streamed(FOUR_SECONDS[: len(FOUR_SECONDS) // 2], 0xFFFFFFFF)),
        ("streamed wav, size 0", _streamed(FOUR_SECONDS[: len(FOUR_SECONDS) // 2], 0)),
        ("whole flac", encode("flac", seconds=4.0)),
    ],
)
def test_whole_and_streamed_files_are_not_flagged(client: TestClient, name: str, data: bytes) -> None:
    response = client.post("/transcribe", files={"file": ("a", data)})
    assert response.status_code == 200, response.text
    assert "x-audio-truncated" not in response.headers


def test_cut_before_any_audio_is_400(client: TestClient) -> None:
    response = client.post("/transcribe", files={"file": ("a.m4a", encode("m4a_aac", seconds=4.0)[:3000])})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "undecodable_audio"


def test_decode_report_marks_a_damaged_tail_and_a_short_wav() -> None:
    report = audio.DecodeReport()
    data = encode("flac", seconds=4.0)
    kept = audio.decode_audio(data[: int(len(data) * 0.6)], 16000, report=report)
    assert report.truncated and 0 < kept.shape[0] < 4 * 16000
    assert wav.wav_cut_short(FOUR_SECONDS[:-2])
    assert not wav.wav_cut_short(FOUR_SECONDS)
    assert not wav.wav_cut_short(_streamed(FOUR_SECONDS[:1000], 0x7FFFFFFF))
