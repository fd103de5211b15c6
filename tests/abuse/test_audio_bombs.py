"""Audio bombs and malformed uploads (docs/security.md, "Memory" and "Uploads").

Against the real server at its default limits (``max_audio_seconds`` 1800, two decodes at once):
each bomb gets its status and JSON error, the server's peak RSS (sampled while the request runs)
rises by less than :data:`BOUND_MB`, and a good request still succeeds afterwards. In-process
cases check the decode-slot cap, the request deadline over decoding, and bad PCM parameters.
The light cases run in ``make test``; the three-hour WebM bomb, four FLAC bombs of unknown length
at once, a 96 MB WAV of empty chunks and a legitimate 30-minute upload are ``abuse`` cases.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.errors import InvalidRequest
from app.main import create_app
from app.routers import inputs
from tests.abuse import bombs
from tests.conftest import wait_ready
from tests.e2e.server import ServerProcess, running_server
from tests.support import FakeFactory, make_random_bundle, tone, wav_bytes

BOUND_MB = 300
"""Most a single bomb (or four FLAC bombs sent together) may raise the server's peak RSS."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real server with the default input limits."""
    folder = tmp_path_factory.mktemp("bombs")
    with running_server(make_random_bundle(folder / "tiny"), folder, ASR_WARMUP="false") as live:
        assert_serves(live)  # the first request's allocations are not the bombs'
        yield live


@dataclass
class PeakRss:
    """The server's RSS before a request and its peak while the request ran, in MB."""

    base: float
    peak: float = 0.0

    @property
    def rise_mb(self) -> float:
        return self.peak - self.base

    def check(self, case: str) -> None:
        """Report the rise (``pytest -s`` shows it) and assert it is within the bound."""
        print(f"{case}: peak RSS {self.base:.0f} -> {self.peak:.0f} MB, rise {self.rise_mb:.0f} MB")
        assert self.rise_mb < BOUND_MB, (case, self)


@contextmanager
def peak_rss(server: ServerProcess) -> Iterator[PeakRss]:
    """Sample the server's RSS every 5 ms in a thread while the block runs."""
    process = psutil.Process(server.proc.pid)
    measured = PeakRss(base=process.memory_info().rss / 2**20)
    measured.peak = measured.base
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            measured.peak = max(measured.peak, process.memory_info().rss / 2**20)
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield measured
    finally:
        stop.set()
        sampler.join()


def post(server: ServerProcess, name: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{server.base_url}/transcribe", files={"file": (name, data)}, timeout=120)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"type", "message", "code"}
    if code is not None:
        assert error["code"] == code


def assert_serves(server: ServerProcess) -> None:
    response = post(server, "good.wav", wav_bytes(tone(2.0)))
    assert response.status_code == 200, response.text
    assert response.json()["duration"] == pytest.approx(2.0, abs=0.01)


# Against the real server


@pytest.mark.e2e
def test_three_hour_ogg_opus_bomb(server: ServerProcess) -> None:
    bomb = bombs.opus_silence(3 * 3600, "ogg")
    with peak_rss(server) as rss:
        response = post(server, "bomb.opus", bomb)
    assert_error(response, 413, "audio_too_long")
    rss.check("3-hour Ogg Opus bomb")
    assert_serves(server)


@pytest.mark.e2e
def test_webm_opus_bomb_of_unstated_length_stops_at_the_budget(server: ServerProcess) -> None:
    bomb = bombs.opus_silence(40 * 60, "webm")  # decodes until the 30-minute budget is passed
    with peak_rss(server) as rss:
        response = post(server, "bomb.webm", bomb)
    assert_error(response, 413, "audio_too_long")
    rss.check("40-minute WebM Opus bomb")
    assert_serves(server)


@pytest.mark.e2e
def test_four_flac_bombs_at_once(server: ServerProcess) -> None:
    flacs = [bombs.flac_silence(seconds) for seconds in (3600, 5400, 7200, 7200)]
    assert all(len(flac) < 100_000 for flac in flacs)
    with peak_rss(server) as rss, ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda flac: post(server, "bomb.flac", flac), flacs))
    for response in responses:
        assert_error(response, 413, "audio_too_long")
    rss.check("four FLAC bombs at once")
    assert_serves(server)


@pytest.mark.e2e
def test_wav_of_a_million_empty_chunks_gets_a_clear_answer(server: ServerProcess) -> None:
    with peak_rss(server) as rss:
        response = post(server, "chunks.wav", bombs.many_chunks_wav(1_000_000))
    assert_error(response, 400, "undecodable_audio")
    assert "chunks" in response.json()["error"]["message"]
    rss.check("WAV of 1M empty chunks")
    assert_serves(server)


@pytest.mark.e2e
def test_truncated_and_malformed_files(server: ServerProcess) -> None:
    statuses = {}
    for name, data in bombs.malformed().items():
        response = post(server, name, data)
        statuses[name] = response.status_code
        if response.status_code != 200:  # a garbled file may still decode in part, as players do
            assert response.status_code in (400, 413, 415), (name, response.text)
            assert set(response.json()["error"]) >= {"type", "message", "code"}
    assert sum(status != 200 for status in statuses.values()) >= len(statuses) // 2, statuses
    assert_serves(server)


@pytest.mark.e2e
@pytest.mark.abuse
def test_three_hour_webm_opus_bomb(server: ServerProcess) -> None:
    with peak_rss(server) as rss:
        response = post(server, "bomb.webm", bombs.opus_silence(3 * 3600, "webm"))
    assert_error(response, 413, "audio_too_long")
    rss.check("3-hour WebM Opus bomb")
    assert_serves(server)


@pytest.mark.e2e
@pytest.mark.abuse
def test_four_flac_bombs_of_unknown_length_at_once(server: ServerProcess) -> None:
    """No header tells their length: each decodes until the budget, two at a time."""
    flacs = [bombs.flac_silence(7200, state_length=False) for _ in range(4)]
    with peak_rss(server) as rss, ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda flac: post(server, "bomb.flac", flac), flacs))
    for response in responses:
        assert_error(response, 413, "audio_too_long")
    rss.check("four FLAC bombs of unknown length at once")
    assert_serves(server)


@pytest.mark.e2e
@pytest.mark.abuse
def test_96_mb_wav_of_empty_chunks(server: ServerProcess) -> None:
    with peak_rss(server) as rss:
        response = post(server, "chunks.wav", bombs.many_chunks_wav(12_000_000))
    assert_error(response, 400, "undecodable_audio")
    rss.check("WAV of 12M empty chunks")
    assert_serves(server)


@pytest.mark.e2e
@pytest.mark.abuse
def test_legitimate_30_minute_upload(server: ServerProcess) -> None:
    """The longest audio accepted, as a 16 kHz WAV (57.6 MB): transcribed, within the bound."""
    minute = np.random.default_rng(0).uniform(-0.1, 0.1, 60 * 16000).astype(np.float32)
    data = wav_bytes(np.tile(minute, 30))
    with peak_rss(server) as rss:
        response = post(server, "long.wav", data)
    assert response.status_code == 200, response.text
    assert response.json()["duration"] == pytest.approx(1800.0, abs=0.01)
    rss.check("legitimate 30-minute WAV upload")


# In-process


@pytest.fixture
def app_client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    settings = Settings(warmup=False, max_wait_ms=5, log_json=False, **getattr(request, "param", {}))
    with TestClient(create_app(settings, recognizer_factory=FakeFactory()), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


@pytest.mark.parametrize("content_type", ["audio/pcm;rate=²", "audio/pcm;rate=16000;channels=²", "audio/pcm;rate=1e4"])
def test_non_ascii_digits_in_pcm_parameters_are_refused(app_client: TestClient, content_type: str) -> None:
    """'²' passes ``str.isdigit`` but not ``int``: it was an unhandled 500."""
    body = (tone(0.5) * 32767).astype("<i2").tobytes()
    headers = {b"content-type": content_type.encode("latin-1")}  # as it arrives: one byte, 0xB2
    response = app_client.post("/transcribe", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_parameter"
    with pytest.raises(InvalidRequest):
        inputs._int_param("٣")  # any other Unicode digit too


@pytest.mark.parametrize("app_client", [{"request_timeout_s": 0.3}], indirect=True)
def test_waiting_for_a_decode_slot_counts_against_the_deadline(app_client: TestClient) -> None:
    app_client.app.state.decode_slots = asyncio.Semaphore(0)  # type: ignore[attr-defined]  # every slot taken
    response = app_client.post("/transcribe", files={"file": ("a.wav", wav_bytes(tone(1.0, 44100), 44100))})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"


@pytest.mark.parametrize("app_client", [{"request_timeout_s": 0.3}], indirect=True)
def test_a_decode_running_past_the_deadline_gets_504(app_client: TestClient) -> None:
    bomb = bombs.opus_silence(25 * 60, "webm")  # within the duration limit, but slow to decode
    response = app_client.post("/transcribe", files={"file": ("long.webm", bomb)})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert app_client.post("/transcribe", files={"file": ("a.wav", wav_bytes(tone(1.0)))}).status_code == 200


@pytest.mark.parametrize("app_client", [{"max_concurrent_decodes": 2}], indirect=True)
def test_decodes_are_capped_at_max_concurrent_decodes(app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    running, most, lock = 0, 0, threading.Lock()
    real = inputs.decode_audio

    def slow_decode(*args: object, **kwargs: object) -> np.ndarray:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.2)
        with lock:
            running -= 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(inputs, "decode_audio", slow_decode)
    flac = bombs.flac_silence(1.0)
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: app_client.post("/transcribe", files={"file": ("a.flac", flac)}), range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    assert most == 2


def test_the_body_is_released_once_decoded() -> None:
    upload = inputs.AudioUpload(wav_bytes(tone(1.0, 44100), 44100))

    class Request:  # the one attribute decode_upload reads
        class app:
            class state:
                decode_slots = asyncio.Semaphore(1)

    audio = asyncio.run(inputs.decode_upload(Request(), upload, 16000, Settings()))  # type: ignore[arg-type]
    assert audio.shape == (16000,) and upload.data == b""
