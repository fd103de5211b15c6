"""Soak: steady mixed load on the real server with abuse mixed in, for a bounded time.

Good clients post the benchmark workload's clips in a closed loop (and one stream sends speech
at real time); between them, an abuser cycles through bad inputs: junk bytes, a truncated file,
an audio bomb longer than the limit, a body over the limit, bad parameters, an oversized header,
a stream flooding audio, a slowloris connection. Every answer is checked against what the server
promises (docs/security.md), and the server's RSS is sampled throughout.

The report (stdout and ``bench/results/soak-<time>.json``): requests and errors of each kind,
abuse cases whose answer was not the promised one, unhandled 500s, and RSS at start, peak and
end. The exit status is 1 when a good request failed, an abuse answer was wrong, a 500 was
served, or the server died.

    python -m bench.soak --seconds 180
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import psutil
import soundfile as sf
import websockets

from app.config import DEFAULT_MODEL_PATH
from bench import workload
from bench.servers import HOST, ServerSpec, running

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 16000


@dataclass
class Tally:
    """What happened: counts by outcome, the wrong answers, and the RSS samples."""

    good: Counter[str] = field(default_factory=Counter)
    abuse: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)


def _flac(seconds: float) -> bytes:
    """Silence as FLAC: a few KB that decode to ``seconds`` of audio."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", samplerate=RATE, channels=1, format="FLAC") as out:
        block = np.zeros(RATE * 60, dtype=np.int16)
        for _ in range(int(seconds // 60) + 1):
            out.write(block)
    return buffer.getvalue()


def _wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


class Abuser:
    """Bad inputs, each with the answers the server may give it."""

    def __init__(self, url: str, settings: dict[str, float], clip: bytes) -> None:
        self.url = url
        self.settings = settings
        self.clip = clip
        self.bomb = _flac(settings["max_audio_seconds"] + 120)
        rng = np.random.default_rng(3)
        self.junk = rng.integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes()
        self.cases: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            ("junk_bytes", lambda: self._post(self.junk, "audio/wav", expect={400, 415})),
            ("truncated_wav", lambda: self._post(self.clip[: len(self.clip) // 3], "audio/wav", expect={200, 400})),
            ("audio_bomb", lambda: self._post(self.bomb, "audio/flac", expect={413})),
            ("pcm_bad_rate", lambda: self._post(self.clip, "audio/pcm;rate=\u00b2", expect={400, 422})),
            ("bad_parameter", lambda: self._post(self.clip, "audio/wav", params={"beam_size": "-3"}, expect={422})),
            ("over_body_limit", self._over_limit),
            ("huge_header", self._huge_header),
            ("stream_flood", self._stream_flood),
            ("slowloris", self._slowloris),
        ]

    async def _post(
        self, body: bytes, content_type: str, expect: set[int], params: dict[str, str] | None = None
    ) -> str:
        async with httpx.AsyncClient(timeout=60) as client:
            reply = await client.post(
                f"{self.url}/transcribe", content=body, headers={b"content-type": content_type.encode()}, params=params
            )
        if reply.status_code not in expect:
            return f"status {reply.status_code}: {reply.text[:200]}"
        if reply.status_code >= 400 and "error" not in reply.json():
            return f"status {reply.status_code} without the error shape"
        return ""

    async def _over_limit(self) -> str:
        limit = int(self.settings["max_upload_bytes"])
        head = f"POST /transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: {limit + 1}\r\n\r\n"
        status = await asyncio.to_thread(_raw_exchange, self.url, head.encode() + b"\0" * 65536)
        return "" if status in (413, None) else f"status {status}"

    async def _huge_header(self) -> str:
        size = int(self.settings["max_header_bytes"]) * 4
        head = f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {'a' * size}\r\n\r\n"
        status = await asyncio.to_thread(_raw_exchange, self.url, head.encode())
        return "" if status in (400, 413, 431, None) else f"status {status}"

    async def _slowloris(self) -> str:
        timeout = self.settings["header_timeout_s"]
        closed_after = await asyncio.to_thread(_slow_header, self.url, timeout + 10)
        if closed_after is None or closed_after > timeout + 3:
            return f"a slow header was not closed within {timeout + 3:g} s"
        return ""

    async def _stream_flood(self) -> str:
        url = self.url.replace("http://", "ws://") + "/stream"
        chunk = np.zeros(RATE, dtype=np.int16).tobytes()  # 1 s per message, sent as fast as possible
        started = time.monotonic()
        try:
            async with websockets.connect(url, max_size=None) as ws:
                for _ in range(120):
                    await ws.send(chunk)
                    await asyncio.sleep(0.01)
                await asyncio.wait_for(_until_closed(ws), 10)
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            seconds = time.monotonic() - started
            return "" if code == 1008 and seconds < 10 else f"closed with {code} after {seconds:.1f} s"
        return "a stream at 100x real time was not closed"

    async def run(self, tally: Tally, stop: float) -> None:
        index = 0
        while time.monotonic() < stop:
            name, case = self.cases[index % len(self.cases)]
            index += 1
            try:
                problem = await case()
            except Exception as exc:  # a crash of the harness's own client counts as a wrong answer
                problem = f"{type(exc).__name__}: {exc}"
            tally.abuse[name] += 1
            if problem:
                tally.wrong.append(f"{name}: {problem}")
            await asyncio.sleep(0.5)


async def _until_closed(ws: websockets.ClientConnection) -> None:
    """Read until the server closes; a close is always reported as ConnectionClosed."""
    while True:
        await ws.recv()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _raw_exchange(url: str, data: bytes) -> int | None:
    """Send bytes on a fresh socket; the status the server answers with, or None if it just closed."""
    with socket.create_connection(_address(url), timeout=30) as sock:
        with contextlib.suppress(OSError):  # the server may refuse and close before reading all of it
            sock.sendall(data)
        try:
            reply = sock.recv(4096)
        except OSError:
            return None
    return int(reply.split()[1]) if reply.startswith(b"HTTP/1.1 ") else None


def _slow_header(url: str, give_up_s: float) -> float | None:
    """Send a request head one byte a second; seconds until the server closed, None if it never did."""
    started = time.monotonic()
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    with socket.create_connection(_address(url), timeout=2) as sock:
        for byte in head:
            if time.monotonic() - started > give_up_s:
                return None
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1024, socket.MSG_DONTWAIT) == b"":
                    return time.monotonic() - started
            except BlockingIOError:
                pass
            except OSError:
                return time.monotonic() - started
            time.sleep(1.0)
    return None


async def good_client(url: str, clips: list[bytes], tally: Tally, stop: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    async with httpx.AsyncClient(timeout=120) as client:
        while time.monotonic() < stop:
            body = clips[int(rng.integers(len(clips)))]
            try:
                reply = await client.post(f"{url}/transcribe", content=body, headers={"content-type": "audio/wav"})
                outcome = "ok" if reply.status_code == 200 else f"status_{reply.status_code}"
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            tally.good[outcome] += 1


async def good_stream(url: str, clip: bytes, tally: Tally, stop: float) -> None:
    """One stream at real time, reconnecting after each clip; every one must end normally."""
    samples, _ = sf.read(io.BytesIO(clip), dtype="int16")
    pcm = samples.tobytes()
    step = RATE // 10 * 2  # 100 ms of s16 samples
    while time.monotonic() < stop:
        try:
            async with websockets.connect(url.replace("http://", "ws://") + "/stream") as ws:
                for start in range(0, len(pcm), step):
                    await ws.send(pcm[start : start + step])
                    await asyncio.sleep(0.1)
                await ws.send(json.dumps({"type": "eof"}))
                async for _ in ws:
                    pass
            code = ws.close_code
            outcome = "stream_ok" if code == 1000 else f"stream_close_{code}"
        except (OSError, websockets.WebSocketException) as exc:
            outcome = type(exc).__name__
        tally.good[outcome] += 1


def sample_rss(pid: int, tally: Tally, done: threading.Event) -> None:
    process = psutil.Process(pid)
    while not done.is_set():
        try:
            tally.rss_mb.append(process.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            return
        done.wait(0.25)


def server_errors(url: str) -> float:
    """Unhandled errors the server counted (asr_errors_total{type="server_error"})."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith('asr_errors_total{type="server_error"}'):
            return float(line.split()[1])
    return 0.0


async def soak(url: str, pid: int, args: argparse.Namespace, settings: dict[str, float]) -> Tally:
    clips = [path.read_bytes() for path in _clip_paths(args.clips)]
    tally = Tally()
    done = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(pid, tally, done), daemon=True)
    sampler.start()
    stop = time.monotonic() + args.seconds
    try:
        await asyncio.gather(
            *(good_client(url, clips, tally, stop, seed) for seed in range(args.concurrency)),
            good_stream(url, clips[0], tally, stop),
            Abuser(url, settings, clips[0]).run(tally, stop),
        )
    finally:
        done.set()
        sampler.join()
    return tally


def _clip_paths(count: int) -> list[Path]:
    clips = workload.load(clips=count, max_s=12.0)
    return [clips.path(clip) for clip in clips.clips]


def report(tally: Tally, errors_500: float, alive: bool, args: argparse.Namespace) -> dict[str, object]:
    rss = tally.rss_mb or [0.0]
    good_failed = sum(n for outcome, n in tally.good.items() if outcome not in ("ok", "stream_ok"))
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "good": dict(tally.good),
        "good_failed": good_failed,
        "abuse": dict(tally.abuse),
        "abuse_wrong": tally.wrong,
        "server_errors_500": errors_500,
        "server_alive": alive,
        "rss_mb": {"start": round(rss[0], 1), "peak": round(max(rss), 1), "end": round(rss[-1], 1)},
        "passed": alive and good_failed == 0 and not tally.wrong and errors_500 == 0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="how long the load runs")
    parser.add_argument("--concurrency", type=int, default=3, help="good clients posting in a closed loop")
    parser.add_argument("--clips", type=int, default=16, help="distinct workload clips")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    args = parser.parse_args(argv)
    settings = {
        "max_audio_seconds": 120.0,  # small limits make the abuse cases quick to send and to refuse
        "max_upload_bytes": 8 * 2**20,
        "max_header_bytes": 32 * 1024,
        "header_timeout_s": 5.0,
    }
    env = {
        f"ASR_{name.upper()}": str(int(value)) if value == int(value) else str(value)
        for name, value in settings.items()
    }
    spec = ServerSpec(
        "soak",
        [sys.executable, "-m", "app"],
        {"ASR_MODEL_PATH": str(args.model), "ASR_HOST": HOST, "ASR_PORT": "{port}", "ASR_LOG_LEVEL": "warning", **env},
    )
    with running(spec) as server:
        tally = asyncio.run(soak(server.url, server.process.pid, args, settings))
        alive = server.process.poll() is None
        errors_500 = server_errors(server.url) if alive else -1.0
    result = report(tally, errors_500, alive, args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    raise SystemExit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
