"""A small client of the service's public API: ``POST /transcribe`` and ``WS /stream``.

It needs httpx, websockets, and PyAV with the server's resampler (``app.asr.resample``: NumPy and
PyAV only) to read audio files, never the rest of the server::

    client = AsrClient("http://127.0.0.1:8000")  # api_key="..." for a server that needs one
    print(client.transcribe("talk.wav")["text"])
    finals = asyncio.run(client.stream_file("talk.wav", realtime=True))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import websockets

from app.asr.resample import Resampler

STREAM_RATE = 16000
FAST_SPEED = 4.0  # the pace without ``realtime``: the fastest a server with default limits accepts
Message = dict[str, Any]


class StreamError(Exception):
    """The server ended a stream with an error (its close code and message)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(f"stream closed with code {code}: {message}")
        self.code = code
        self.message = message


def read_pcm(path: str | Path, rate: int = STREAM_RATE) -> bytes:
    """Decode an audio file to mono 16-bit little-endian PCM at ``rate`` (channels averaged)."""
    out = bytearray()
    with av.open(str(path)) as container:
        resampler: Resampler | None = None
        for frame in container.decode(audio=0):
            resampler = resampler or Resampler(frame.sample_rate, rate)
            out += _s16(resampler.push_frame(frame))
        if resampler is not None:
            out += _s16(resampler.flush())
    return bytes(out)


def _s16(samples: np.ndarray) -> bytes:
    """Float samples as 16-bit little-endian PCM, rounded and clipped as FFmpeg converts them."""
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()


class AsrClient:
    """Talks to one server at ``base_url`` (``http://`` or ``https://``), with ``api_key`` sent
    as ``Authorization: Bearer <key>`` when given."""

    def __init__(
        self, base_url: str = "http://127.0.0.1:8000", timeout_s: float = 300.0, api_key: str | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @property
    def stream_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/stream"

    def transcribe(self, path: str | Path) -> Message:
        """Upload a file to ``POST /transcribe``; the response body. Raises ``httpx.HTTPStatusError``."""
        with open(path, "rb") as audio:
            response = httpx.post(
                f"{self.base_url}/transcribe",
                files={"file": (Path(path).name, audio)},
                headers=self.headers,
                timeout=self.timeout_s,
            )
        response.raise_for_status()
        body: Message = response.json()
        return body

    def transcribe_pcm(self, pcm: bytes, rate: int = STREAM_RATE, retries: int = 5) -> Message:
        """Send mono s16le ``pcm`` to ``POST /transcribe`` as a raw body; the response body. A 429 or
        503 is retried after its ``Retry-After`` (up to ``retries`` times); other errors raise
        ``httpx.HTTPStatusError``."""
        for attempt in range(retries + 1):
            response = httpx.post(
                f"{self.base_url}/transcribe",
                content=pcm,
                headers={**self.headers, "Content-Type": f"audio/pcm;rate={rate}"},
                timeout=self.timeout_s,
            )
            if response.status_code not in (429, 503) or attempt == retries:
                break
            time.sleep(_retry_after(response))
        response.raise_for_status()
        body: Message = response.json()
        return body

    async def stream_file(
        self,
        path: str | Path,
        realtime: bool = False,
        chunk_ms: int = 100,
        on_message: Callable[[Message], None] | None = None,
        config: Message | None = None,
    ) -> list[Message]:
        """Stream a file over ``WS /stream``; the finals. ``realtime`` paces it like a live source."""
        pcm = await asyncio.to_thread(read_pcm, path)
        return await self.stream_pcm(pcm, realtime, chunk_ms, on_message, config)

    async def stream_pcm(
        self,
        pcm: bytes,
        realtime: bool = False,
        chunk_ms: int = 100,
        on_message: Callable[[Message], None] | None = None,
        config: Message | None = None,
    ) -> list[Message]:
        """Stream 16 kHz s16le PCM; every message goes to ``on_message``; returns the finals."""
        finals: list[Message] = []
        error = ""
        async with websockets.connect(self.stream_url, max_size=2**22, additional_headers=self.headers) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):  # a refused stream may be closed already
                await ws.send(json.dumps({"type": "config", "sample_rate": STREAM_RATE, **(config or {})}))
            sender = asyncio.create_task(_send_audio(ws, pcm, chunk_ms, realtime))
            try:
                async for raw in ws:
                    message: Message = json.loads(raw)
                    if on_message is not None:
                        on_message(message)
                    if message["type"] == "final":
                        finals.append(message)
                    elif message["type"] == "error":
                        error = str(message.get("message", ""))
            except websockets.ConnectionClosedError:
                pass  # closed with an error code: reported below
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            code = ws.close_code
        if code != 1000:
            raise StreamError(code, error or (ws.close_reason or "connection closed"))
        return finals


def _retry_after(response: httpx.Response) -> float:
    """The wait a 429 or 503 asks for (seconds; 1 if it names none or a date), at most 30."""
    value = response.headers.get("Retry-After", "")
    return min(30.0, float(value)) if value.isdigit() else 1.0


async def _send_audio(ws: websockets.ClientConnection, pcm: bytes, chunk_ms: int, realtime: bool) -> None:
    """Send ``pcm`` in chunks at the pace of the audio when ``realtime``, else at ``FAST_SPEED`` times it
    (a server refuses audio past its ``ASR_STREAM_MAX_SPEED``), then eof."""
    size = STREAM_RATE * 2 * chunk_ms // 1000
    interval = chunk_ms / 1000 / (1.0 if realtime else FAST_SPEED)
    started = time.monotonic()
    for index, offset in enumerate(range(0, len(pcm), size)):
        await asyncio.sleep(max(0.0, started + index * interval - time.monotonic()))
        await ws.send(pcm[offset : offset + size])
    await ws.send(json.dumps({"type": "eof"}))
