"""One request at a time through the real server, the slim path (``ASR_RUNTIME=onnx``) against
PyTorch (``torch``): what a single client waits for, per decoder, on a 10 s clip.

    python -m bench.single_request [--model models/en-whisper-tiny] [--rounds 2] [--requests 15]

Each round starts one server per runtime in turn (default settings otherwise: the serving plan's
worker layout and threads), sends two warm-up requests and then ``--requests`` requests one after
another per decoder, and stops it. Read the ratios (PyTorch time / slim time; above 1: the slim
server answers sooner): median and fastest request.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import servers
from bench.slim_recognizer import DATA, compare, speech_clip

DECODERS = ("greedy", "beam", "attention")
RUNTIMES = ("onnx", "torch")


def wav_bytes(audio: np.ndarray, rate: int = 16000) -> bytes:
    """16-bit mono WAV of float samples in [-1, 1]."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def latencies(url: str, body: bytes, decoder: str, requests: int) -> list[float]:
    """Seconds per request of ``requests`` sequential POST /transcribe (after two warm-ups)."""
    times = []
    with httpx.Client(timeout=120) as client:
        for n in range(requests + 2):
            started = time.perf_counter()
            response = client.post(f"{url}/transcribe", params={"decoder": decoder}, files={"file": ("a.wav", body)})
            response.raise_for_status()
            if n >= 2:
                times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/en-whisper-tiny"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    body = wav_bytes(speech_clip(DATA, args.seconds))
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for runtime in RUNTIMES:
            spec = servers.ours(f"single-{runtime}", args.model, runtime, "auto", decoder="auto")
            with servers.running(spec) as server:
                for decoder in DECODERS:
                    times.setdefault((runtime, decoder), []).extend(latencies(server.url, body, decoder, args.requests))
    results: dict[str, Any] = {"clip_seconds": args.seconds, "rounds": args.rounds, "requests": args.requests}
    for decoder in DECODERS:
        results[decoder] = compare(times[("torch", decoder)], times[("onnx", decoder)])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
