"""Property-based fuzzing of the upload decoder and the request parsing in front of it.

Arbitrary bytes, mutated and truncated valid files, arbitrary PCM formats and arbitrary
Content-Type headers: only :class:`AudioError` subclasses may escape the decoder (0 crashes),
whatever decodes is finite float32 mono within the budget, and no request gets a 500.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.asr import audio
from app.config import Settings
from app.main import create_app
from tests.abuse.bombs import flac_silence
from tests.conftest import wait_ready
from tests.support import FakeFactory, encode, tone, wav_bytes

MAX_SECONDS = 3.0
BUDGET = int(MAX_SECONDS * 16000) + audio.RESAMPLER_SLACK
SEEDS = [
    wav_bytes(tone(0.5)),
    wav_bytes(tone(0.5, 44100, channels=2), 44100),
    encode("flac", 0.5),
    encode("ogg_opus", 0.5, channels=1),
    encode("mp3", 0.5),
    encode("webm_opus", 0.5, channels=1),
    encode("ogg_vorbis", 0.5),
    flac_silence(5.0),  # a bomb past the budget
]
EXAMPLES = int(os.environ.get("ASR_FUZZ_EXAMPLES", "60"))
"""Examples per property: a few seconds in ``make test``; set ASR_FUZZ_EXAMPLES to fuzz longer."""
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def check_decoded(decode: object, *args: object) -> None:
    """Call the decoder: an AudioError is a clean refusal; anything decoded must be sane."""
    try:
        samples = decode(*args)  # type: ignore[operator]
    except audio.AudioError:
        return
    assert isinstance(samples, np.ndarray)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert 0 < samples.shape[0] <= BUDGET
    assert np.isfinite(samples).all()


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data: bytes) -> None:
    check_decoded(audio.decode_audio, data, 16000, MAX_SECONDS)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=40),
    st.floats(0.05, 1.0),
)
def test_mutated_and_truncated_files(seed: bytes, edits: list[tuple[float, int]], keep: float) -> None:
    data = bytearray(seed[: max(1, int(len(seed) * keep))])
    for where, value in edits:
        data[int(where * len(data))] = value
    check_decoded(audio.decode_audio, bytes(data), 16000, MAX_SECONDS)


@FUZZ
@given(
    st.binary(max_size=20000),
    st.integers(-10, 500_000),
    st.sampled_from(["s16le", "f32le", "u8", ""]),
    st.integers(-2, 80),
)
def test_raw_pcm_of_any_format(data: bytes, rate: int, encoding: str, channels: int) -> None:
    check_decoded(audio.decode_pcm, data, audio.PcmFormat(rate, encoding, channels), 16000, MAX_SECONDS)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(warmup=False, max_wait_ms=5, log_json=False, max_audio_seconds=MAX_SECONDS)
    with TestClient(create_app(settings, recognizer_factory=FakeFactory()), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)


@settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        _HEADER_TEXT,
        st.builds(lambda p: "audio/pcm;" + p, _HEADER_TEXT),
        st.builds(lambda p: "multipart/form-data; boundary=" + p, _HEADER_TEXT),
    ),
    st.sampled_from([b"", wav_bytes(tone(0.2)), b"--x\r\nContent-Disposition: form-data; name=file\r\n\r\nab"]),
    st.one_of(st.none(), st.text(max_size=8)),
)
def test_request_parsing_never_fails_with_500(
    client: TestClient, content_type: str, body: bytes, sample_rate: str | None
) -> None:
    params = {} if sample_rate is None else {"sample_rate": sample_rate}
    headers = {b"content-type": content_type.encode("latin-1")}
    response = client.post("/transcribe", content=body, headers=headers, params=params)
    assert response.status_code in (200, 400, 413, 415, 422), (response.status_code, response.text)
    if response.status_code != 200:
        assert set(response.json()["error"]) >= {"type", "message", "code"}
