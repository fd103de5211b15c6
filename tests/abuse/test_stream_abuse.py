"""Stream abuse: audio floods, squatting tricklers, client-chosen close codes, a stalled server.

The light cases run in-process over the tone model (tests/streaming_support.py); the heavy ones
(``-m abuse``) start the real server as a subprocess and measure its memory.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import websockets

from app.engine.pacing import AudioTooFast, PaceLimits, StreamPace
from app.engine.streaming import StreamBacklog
from app.main import create_app
from app.metrics import close_code_label
from tests.e2e.server import random_bundle, running_server
from tests.integration.test_stream import stream_settings, wait_for_ready
from tests.streaming_support import ToneFactory, live_server, pcm16, spell
from tests.support import wait_for
from tests.unit.test_stream_session import StubEngine, session

RATE = 16000
CHUNK_S = 0.1
CHUNK = pcm16(0.3 * np.sin(2 * np.pi * 440 * np.arange(int(RATE * CHUNK_S)) / RATE))  # 100 ms of tone
IDLE_S = 1.0  # the light server's idle timeout


@dataclass
class Outcome:
    """How a stream ended: the server's messages, its close code and when it came (s after opening)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    code: int | None = None
    closed_after: float = 0.0

    @property
    def errors(self) -> list[str]:
        return [m["code"] for m in self.messages if m["type"] == "error"]


Sender = Callable[[websockets.ClientConnection], Coroutine[Any, Any, None]]


async def drive(url: str, send: Sender, limit_s: float = 30.0) -> Outcome:
    """Open a stream, run ``send`` while reading every message until the server closes."""
    outcome = Outcome()
    async with websockets.connect(url, open_timeout=30) as ws:
        opened = time.monotonic()
        sender = asyncio.create_task(send(ws))
        try:
            async with asyncio.timeout(limit_s):
                async for raw in ws:
                    outcome.messages.append(json.loads(raw))
        except websockets.ConnectionClosedError:
            pass  # a close other than 1000: its code is read below
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        outcome.closed_after = time.monotonic() - opened
        outcome.code = ws.close_code
    return outcome


def paced(speed: float, seconds: float, chunk: bytes = CHUNK, eof: bool = True) -> Sender:
    """Send ``seconds`` of audio in ``chunk`` messages at ``speed`` times real time (then eof)."""
    chunk_s = len(chunk) / (2 * RATE)

    async def send(ws: websockets.ClientConnection) -> None:
        started = time.monotonic()
        for index in range(round(seconds / chunk_s)):
            await asyncio.sleep(max(0.0, started + index * chunk_s / speed - time.monotonic()))
            await ws.send(chunk)
        if eof:
            await ws.send(json.dumps({"type": "eof"}))

    return send


def trickle(size: int, every_s: float) -> Sender:
    """A few bytes every ``every_s`` seconds, forever: a message stream that carries no audio."""

    async def send(ws: websockets.ClientConnection) -> None:
        while True:
            await ws.send(b"\0" * size)
            await asyncio.sleep(every_s)

    return send


def metrics_text(base: str) -> str:
    return httpx.get(f"http://{base}/metrics", timeout=10).text


# ---------------------------------------------------------------------------------------------
# Light: in-process over the tone model.


@pytest.fixture(scope="module")
def light_server() -> Iterator[str]:
    app = create_app(stream_settings(stream_idle_timeout_s=IDLE_S), recognizer_factory=ToneFactory())
    with live_server(app) as (base, _):
        wait_for_ready(base)
        yield base


def test_ten_times_real_time_is_closed_within_2_s(light_server: str) -> None:
    outcome = asyncio.run(drive(f"ws://{light_server}/stream", paced(10.0, 30.0), limit_s=10))
    assert outcome.code == 1008 and outcome.errors == ["audio_too_fast"], outcome
    assert "4x real time" in outcome.messages[-1]["message"]
    assert outcome.closed_after < 2.0
    assert 'asr_rejected_requests_total{reason="audio_too_fast"}' in metrics_text(light_server)
    good = asyncio.run(drive(f"ws://{light_server}/stream", paced(1.0, 0.5)))
    assert good.code == 1000  # the server still serves streams


def test_a_trickle_of_messages_without_audio_is_closed_as_idle(light_server: str) -> None:
    # A message every 0.1 s (ten times the idle timeout's frequency), but 1 sample each.
    outcome = asyncio.run(drive(f"ws://{light_server}/stream", trickle(2, 0.1), limit_s=10))
    assert outcome.code == 1008 and outcome.errors == ["idle_timeout"], outcome
    assert IDLE_S <= outcome.closed_after < IDLE_S + 1.5


def test_real_time_audio_with_a_pause_shorter_than_the_timeout_is_never_closed(light_server: str) -> None:
    speech = pcm16(spell("ok go", tail_s=0.5))
    silence = bytes(len(CHUNK))

    async def send(ws: websockets.ClientConnection) -> None:
        started = time.monotonic()
        for index, start in enumerate(range(0, len(speech), len(CHUNK))):  # real time, on a fixed schedule
            await asyncio.sleep(max(0.0, started + index * CHUNK_S - time.monotonic()))
            await ws.send(speech[start : start + len(CHUNK)])
        await asyncio.sleep(IDLE_S / 2)  # a pause within the timeout
        await paced(1.0, 2 * IDLE_S, chunk=silence)(ws)

    outcome = asyncio.run(drive(f"ws://{light_server}/stream", send))
    assert outcome.code == 1000, outcome
    assert [m["text"] for m in outcome.messages if m["type"] == "final"][:1] == ["ok go"]


def test_client_close_codes_are_counted_under_a_bounded_label(light_server: str) -> None:
    async def close_with(code: int) -> None:
        async with websockets.connect(f"ws://{light_server}/stream") as ws:
            await ws.send(CHUNK)
            await ws.close(code=code)

    for code in (4321, 3999, 4000):
        asyncio.run(close_with(code))
    wait_for(lambda: 'asr_stream_closes_total{code="other"} 3.0' in metrics_text(light_server), 10, "not counted")
    text = metrics_text(light_server)
    assert not any(f'code="{code}"' in text for code in (4321, 3999, 4000))
    assert [close_code_label(c) for c in (1000, 1008, 1013, 4321, 2**31)] == ["1000", "1008", "1013", "other", "other"]


def test_the_pace_refuses_a_flood_and_spots_a_trickle() -> None:
    limits = PaceLimits(max_speed=4.0, burst_s=5.0, idle_timeout_s=30.0)
    pace = StreamPace(limits, opened=100.0)
    assert pace.idle_at == 130.0  # before any audio: the timeout runs from the open
    pace.admit(5.0, 110.0)  # the burst at once
    pace.admit(4.0, 111.0)  # then 4x real time
    with pytest.raises(AudioTooFast, match="4x real time"):
        pace.admit(0.01, 111.0)
    assert pace.idle_at == 111.0 + 5.0 + 30.0  # audio ahead of the clock counts up to the burst only
    squatter = StreamPace(limits, opened=0.0)
    for t in range(0, 3 * 3600, 20):  # 2 bytes (1 sample) every 20 s
        if t >= squatter.idle_at:
            break
        squatter.admit(1 / 16000, float(t))
    assert 30.0 <= squatter.idle_at < 31.0


def test_a_stalled_server_refuses_audio_past_the_backlog() -> None:
    engine = StubEngine()
    stream = session(engine, [], max_backlog_s=2.0)  # no processing task runs: nothing leaves the inbox
    stream.push(b"\0" * RATE)  # 0.5 s
    stream.push(b"\0" * (3 * RATE))  # 1.5 s: 2 s in all, at the limit
    with pytest.raises(StreamBacklog, match="2 s of audio behind"):
        stream.push(b"\0\0")


# ---------------------------------------------------------------------------------------------
# Heavy: the real server as a subprocess.


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_bundle(tmp_path_factory.mktemp("model") / "random-en-small")


class PeakRss:
    """The peak RSS (MB) of process ``pid``, sampled every 10 ms on a thread while in the block."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.start = self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> float:
        return float(self.process.memory_info().rss) / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.end = self.now()
        self.peak = max(self.peak, self.end)


@pytest.mark.abuse
def test_a_flood_at_ten_times_real_time_is_closed_within_2_s_with_little_memory(bundle: Path, tmp_path: Path) -> None:
    with running_server(bundle, tmp_path) as server:
        url = server.base_url.replace("http://", "ws://") + "/stream"
        asyncio.run(drive(url, paced(1.0, 0.5)))  # warm the stream path
        with PeakRss(server.proc.pid) as rss:
            floods = [asyncio.run(drive(url, paced(10.0, 60.0), limit_s=10)) for _ in range(3)]
        assert httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200
    for outcome in floods:
        assert outcome.code == 1008 and outcome.errors == ["audio_too_fast"], outcome
        assert outcome.closed_after < 2.0, outcome
    closes = ", ".join(f"{o.closed_after:.2f}" for o in floods)
    print(f"floods closed after {closes} s; RSS {rss.start:.0f} -> peak {rss.peak:.0f} -> {rss.end:.0f} MB")
    assert rss.peak - rss.start < 50, f"RSS {rss.start:.0f} MB -> peak {rss.peak:.0f} MB"


@pytest.mark.abuse
def test_two_hundred_squatters_are_closed_after_the_idle_timeout(bundle: Path, tmp_path: Path) -> None:
    idle_s, squatters = 3.0, 200
    settings = {"ASR_STREAM_IDLE_TIMEOUT_S": str(idle_s), "ASR_MAX_STREAMS": str(squatters)}
    with running_server(bundle, tmp_path, **settings) as server:
        url = server.base_url.replace("http://", "ws://") + "/stream"

        async def squat() -> tuple[list[Outcome], Outcome]:
            squatting = asyncio.gather(*(drive(url, trickle(2, 0.5), limit_s=idle_s + 30) for _ in range(squatters)))
            await asyncio.to_thread(wait_for, lambda: server.metric("asr_active_streams") == squatters, 30, "no")
            locked_out = await drive(url, paced(1.0, 0.5))
            return await squatting, locked_out

        outcomes, locked_out = asyncio.run(squat())
        wait_for(lambda: server.metric("asr_active_streams") == 0, 10, "the squatters' slots were not freed")
        late = asyncio.run(drive(url, paced(1.0, 0.5)))
    assert locked_out.code == 1013 and locked_out.errors == ["too_many_streams"]  # while they squat
    assert [o.errors for o in outcomes] == [["idle_timeout"]] * squatters
    slowest = max(o.closed_after for o in outcomes)
    print(f"{squatters} squatters closed after {min(o.closed_after for o in outcomes):.2f}-{slowest:.2f} s")
    assert all(o.code == 1008 for o in outcomes) and slowest < idle_s + 10
    assert late.code == 1000  # a new stream is accepted
