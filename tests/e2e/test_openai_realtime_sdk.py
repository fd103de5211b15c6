"""The official OpenAI SDK's Realtime client transcribes a recorded file against the real server.

The server (a subprocess) serves the default bundle (``en-whisper-tiny``) with an API key; the clip is the
first Common Voice clip of ``cv100`` (espeak-ng speech when the set is absent). The SDK streams
it as 24 kHz PCM16 at the pace the server allows and receives deltas and a completed transcript
that equals the offline transcript (``POST /transcribe``) of the same audio.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from app.asr.resample import resample
from bench import workload
from tests.e2e.server import ROOT, ServerProcess, running_server
from tests.support import DATA_ROOT, cv100_clips, wav_bytes

pytestmark = pytest.mark.e2e

KEY = "k-realtime-5c1e9a7d3b"
RATE = 24000
CHUNK_S = 0.1
SPEED = 3.0  # times real time: under the server's 4x (ASR_STREAM_MAX_SPEED)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("realtime")
    with running_server(ROOT / "models" / "en-whisper-tiny", folder, ASR_API_KEYS=KEY, ASR_WARMUP="false") as live:
        yield live


def recording(scratch: Path) -> np.ndarray:
    """A recorded clip at 16 kHz: the first Common Voice clip, or espeak-ng speech when the set is absent."""
    if (DATA_ROOT / "cv100" / "manifest.jsonl").is_file():
        audio, _ = cv100_clips(1)[0]
        return audio
    if not workload.espeak_available():
        pytest.skip("neither cv100 nor espeak-ng is here to speak a clip")
    audio, rate = workload.speak("The birch canoe slid on the smooth planks.", "en-us", 150, scratch)
    return resample(audio, rate, 16000)


async def transcribe_live(base_url: str, audio: bytes) -> list[Any]:
    """Stream PCM16 at 24 kHz through the SDK's realtime client with manual commit; the events."""
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0)
    events: list[Any] = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        session: Any = {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                    "turn_detection": None,
                }
            },
        }
        await connection.session.update(session=session)
        step = int(RATE * CHUNK_S) * 2
        for start in range(0, len(audio), step):
            await connection.input_audio_buffer.append(audio=base64.b64encode(audio[start : start + step]).decode())
            await asyncio.sleep(CHUNK_S / SPEED)
        await connection.input_audio_buffer.commit()
        async for event in connection:
            events.append(event)
            assert event.type != "error", event
            if event.type == "conversation.item.input_audio_transcription.completed":
                break
    return events


def test_sdk_realtime_transcript_equals_offline(server: ServerProcess, tmp_path: Path) -> None:
    audio = resample(recording(tmp_path), 16000, RATE)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    events = asyncio.run(transcribe_live(server.base_url, pcm.tobytes()))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["session.created", "session.updated"]
    assert events[1].session.audio.input.turn_detection is None
    completed = events[-1]
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    assert [e.item_id for e in committed] == [completed.item_id]
    deltas = [e for e in events if e.type == "conversation.item.input_audio_transcription.delta"]
    assert deltas and {d.item_id for d in deltas} == {completed.item_id}
    offline = httpx.post(
        f"{server.base_url}/transcribe",
        files={"file": ("clip.wav", wav_bytes(pcm.astype(np.float32) / 32768, RATE), "audio/wav")},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert offline.status_code == 200, offline.text
    assert completed.transcript == offline.json()["text"] and completed.transcript
    print(f"deltas {[d.delta for d in deltas]}; transcript {completed.transcript!r}")


def test_sdk_realtime_needs_the_key(server: ServerProcess) -> None:
    async def refused() -> Any:
        client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="wrong", max_retries=0)
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
            return await connection.recv()

    event: Any = asyncio.run(refused())
    assert event.type == "error" and event.error.code == "invalid_api_key"
