"""N concurrent real-time streams: partial latency, and the largest N the server keeps up with.

Starts the server (``python -m app``) on a free loopback port. At each level, N streams open
together (starts spread over one chunk) and send 16 kHz PCM of test utterances (joined) in
``--chunk-ms`` chunks at the pace of the audio for ``--seconds``, then eof.

A partial's latency is the time from sending the chunk that holds the end of the audio it covers
(its ``end`` field) to receiving it. A level is *sustained in real time* when its p95 partial
latency is within ``--target-p95-ms``, every stream's last final arrives within
``--max-final-lag-s`` of its eof, and no stream fails. The ramp stops after the first level that
is not sustained.

    python -m bench.stream_load --model models/en-small --streams 5,10,20,50,100 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from app.client import read_pcm
from bench.servers import ours, running
from bench.stats import percentile
from bench.stream_vs_offline import load_manifest

RESULTS = Path(__file__).resolve().parent / "results"
BYTES_PER_SECOND = 32000  # 16 kHz s16le


@dataclass
class StreamResult:
    """What one stream saw."""

    latencies: list[float] = field(default_factory=list)
    finals: int = 0
    final_lag: float = math.nan
    error: str | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/en-small"))
    parser.add_argument("--manifest", type=Path, default=Path("data/manifests/so762_test.jsonl"))
    parser.add_argument("--streams", default="5,10,20,50,100", help="levels of concurrent streams")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per stream and level")
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--target-p95-ms", type=float, default=200.0)
    parser.add_argument("--max-final-lag-s", type=float, default=2.0)
    parser.add_argument("--context-s", type=float, default=1.0, help="ASR_STREAM_MAX_CONTEXT_S (0: full)")
    parser.add_argument("--partial-interval-s", type=float, default=0.5)
    parser.add_argument("--decoder", default="auto", help="ASR_DECODER of the server (finals); auto: its default")
    parser.add_argument(
        "--partial-decoder", default="auto", help="ASR_STREAM_PARTIAL_DECODER of the server; auto: its default"
    )
    parser.add_argument("--precision", default="auto", help="ASR_PRECISION of the server")
    parser.add_argument("--runtime", default="auto", help="ASR_RUNTIME of the server")
    parser.add_argument("--all", action="store_true", help="run every level even after one fails")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def audio_pool(manifest: Path, clips: int = 40) -> list[bytes]:
    """PCM of the manifest's first ``clips`` utterances."""
    return [read_pcm(row["audio"]) for row in load_manifest(manifest, clips)]


def stream_audio(pool: list[bytes], seconds: float, rng: np.random.Generator) -> bytes:
    """Utterances of the pool in a random order, joined and cut to ``seconds``."""
    wanted = int(seconds * BYTES_PER_SECOND)
    out = bytearray()
    while len(out) < wanted:
        for index in rng.permutation(len(pool)):
            out += pool[index]
    return bytes(out[:wanted])


async def one_stream(url: str, pcm: bytes, chunk_ms: int, delay_s: float) -> StreamResult:
    """Send ``pcm`` at real time after ``delay_s``; record partial latencies and the final lag."""
    await asyncio.sleep(delay_s)
    result = StreamResult()
    size = BYTES_PER_SECOND * chunk_ms // 1000
    sent: list[float] = []
    try:
        async with websockets.connect(url, open_timeout=60) as ws:
            await ws.send(json.dumps({"type": "config", "sample_rate": 16000}))
            receiver = asyncio.create_task(_receive(ws, sent, chunk_ms / 1000, result))
            started = time.perf_counter()
            for index, offset in enumerate(range(0, len(pcm), size)):
                await asyncio.sleep(max(0.0, started + index * chunk_ms / 1000 - time.perf_counter()))
                await ws.send(pcm[offset : offset + size])
                sent.append(time.perf_counter())
            eof_at = time.perf_counter()
            await ws.send(json.dumps({"type": "eof"}))
            closed_at = await receiver
            result.final_lag = closed_at - eof_at
            if ws.close_code != 1000:
                result.error = f"close {ws.close_code}"
    except (OSError, websockets.WebSocketException, TimeoutError) as exc:
        result.error = type(exc).__name__
    return result


async def _receive(ws: websockets.ClientConnection, sent: list[float], chunk_s: float, result: StreamResult) -> float:
    async for raw in ws:
        now = time.perf_counter()
        message = json.loads(raw)
        if message["type"] == "partial" and sent:
            index = min(len(sent) - 1, max(0, math.ceil(message["end"] / chunk_s - 1e-6) - 1))
            result.latencies.append(now - sent[index])
        elif message["type"] == "final":
            result.finals += 1
        elif message["type"] == "error":
            result.error = str(message.get("code"))
    return time.perf_counter()


async def run_level(url: str, pool: list[bytes], streams: int, args: argparse.Namespace) -> list[StreamResult]:
    rng = np.random.default_rng(streams)
    spread = args.chunk_ms / 1000
    tasks = [
        one_stream(url, stream_audio(pool, args.seconds, rng), args.chunk_ms, spread * i / streams)
        for i in range(streams)
    ]
    return list(await asyncio.gather(*tasks))


def summarize(streams: int, results: list[StreamResult], args: argparse.Namespace) -> dict[str, Any]:
    latencies = [value for r in results for value in r.latencies]
    lags = [r.final_lag for r in results if not math.isnan(r.final_lag)]
    errors = [r.error for r in results if r.error]
    p95 = percentile(latencies, 95) * 1000
    summary: dict[str, Any] = {
        "streams": streams,
        "partials": len(latencies),
        "finals": sum(r.finals for r in results),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(p95, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "max_final_lag_s": round(max(lags), 2) if lags else None,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
    }
    summary["sustained"] = bool(
        latencies and p95 <= args.target_p95_ms and not errors and lags and max(lags) <= args.max_final_lag_s
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    levels = [int(n) for n in args.streams.split(",")]
    pool = audio_pool(args.manifest)
    settings = {
        "max_streams": str(max(levels) + 10),
        "stream_max_context_s": str(args.context_s),
        "stream_partial_interval_s": str(args.partial_interval_s),
        "decoder": args.decoder,
        "stream_partial_decoder": args.partial_decoder,
    }
    spec = ours("stream-load", args.model.resolve(), args.runtime, args.precision, **settings)
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "levels": []}
    with running(spec) as server:
        url = server.url.replace("http://", "ws://") + "/stream"
        for streams in levels:
            summary = summarize(streams, asyncio.run(run_level(url, pool, streams, args)), args)
            report["levels"].append(summary)
            print(json.dumps(summary), flush=True)
            if not summary["sustained"] and not args.all:
                break
    sustained = [level["streams"] for level in report["levels"] if level["sustained"]]
    report["largest_sustained"] = max(sustained, default=0)
    print(f"largest number of real-time streams sustained: {report['largest_sustained']}")
    out = args.json or RESULTS / f"stream-load-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
