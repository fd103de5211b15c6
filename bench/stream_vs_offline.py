"""Streamed finals against offline transcription of the same audio, on a test manifest.

Starts the server (``python -m app``) on a free loopback port, then for each utterance sends the
same 16 kHz PCM once to ``POST /transcribe`` and once over ``WS /stream`` (as fast as the server
takes it; endpointing may split an utterance at pauses), and reports the word error rate of each
against the reference, and of the streamed text against the offline text. The acceptance is a
streaming WER within 1 point of the offline WER.

    python -m bench.stream_vs_offline --model models/en-small --manifest data/manifests/synth_test.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jiwer

from app.asr.text import normalize_text
from app.client import AsrClient, read_pcm
from bench.servers import ours, running

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/en-small"))
    parser.add_argument("--manifest", type=Path, required=True, help="JSON lines with audio and text")
    parser.add_argument("--limit", type=int, default=100, help="first N utterances (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="utterances in flight at once")
    parser.add_argument("--context-s", type=float, default=1.0, help="ASR_STREAM_MAX_CONTEXT_S (0: full)")
    parser.add_argument("--silence-ms", type=int, default=600, help="endpointing silence of the streams")
    parser.add_argument("--runtime", default="auto", help="ASR_RUNTIME of the server")
    parser.add_argument("--precision", default="auto", help="ASR_PRECISION of the server")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    return parser.parse_args(argv)


def load_manifest(path: Path, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` rows; relative audio paths are relative to the manifest's folder."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:limit]
    for row in rows:
        row["audio"] = str((path.parent / row["audio"]).resolve())
    return rows


async def transcribe_both(client: AsrClient, pcm: bytes, silence_ms: int) -> tuple[str, str]:
    """(offline text, streamed text) of the same PCM."""
    async with httpx.AsyncClient(timeout=300) as http:
        response = await http.post(
            f"{client.base_url}/transcribe", content=pcm, headers={"Content-Type": "audio/pcm;rate=16000"}
        )
        response.raise_for_status()
    config = {"interim_results": False, "endpointing": {"silence_ms": silence_ms}}
    finals = await client.stream_pcm(pcm, config=config)
    return response.json()["text"], " ".join(f["text"] for f in finals if f["text"])


async def run_all(url: str, rows: list[dict[str, Any]], concurrency: int, silence_ms: int) -> list[dict[str, Any]]:
    client = AsrClient(url)
    gate = asyncio.Semaphore(concurrency)

    async def one(row: dict[str, Any]) -> dict[str, Any]:
        async with gate:
            pcm = await asyncio.to_thread(read_pcm, row["audio"])
            offline, streamed = await transcribe_both(client, pcm, silence_ms)
        return {
            "id": row.get("id", row["audio"]),
            "ref": normalize_text(row["text"]),
            "offline": offline,
            "stream": streamed,
            "seconds": len(pcm) / 32000,
        }

    return list(await asyncio.gather(*(one(row) for row in rows)))


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER in percent; an empty reference counts its hypothesis words as insertions."""
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    return 100.0 * jiwer.wer([r for r, _ in pairs], [h or "<empty>" for _, h in pairs]) if pairs else 0.0


def summarize(items: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    refs = [i["ref"] for i in items]
    offline = [i["offline"] for i in items]
    streamed = [i["stream"] for i in items]
    summary = {
        "model": str(args.model),
        "manifest": str(args.manifest),
        "utterances": len(items),
        "audio_seconds": round(sum(i["seconds"] for i in items), 1),
        "runtime": f"{args.runtime}/{args.precision}",
        "context_s": args.context_s,
        "silence_ms": args.silence_ms,
        "wer_offline": round(wer(refs, offline), 2),
        "wer_stream": round(wer(refs, streamed), 2),
        "wer_stream_vs_offline": round(wer(offline, streamed), 2),
        "identical_transcripts": sum(o == s for o, s in zip(offline, streamed, strict=True)),
        "wall_seconds": round(seconds, 1),
    }
    summary["within_1_point"] = abs(summary["wer_stream"] - summary["wer_offline"]) <= 1.0
    return summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = load_manifest(args.manifest, args.limit)
    settings = {"stream_max_context_s": str(args.context_s)}
    spec = ours("stream-vs-offline", args.model.resolve(), args.runtime, args.precision, **settings)
    started = time.perf_counter()
    with running(spec) as server:
        items = asyncio.run(run_all(server.url, rows, args.concurrency, args.silence_ms))
    summary = summarize(items, args, time.perf_counter() - started)
    print(json.dumps(summary, indent=2))
    for item in items:
        if item["offline"] != item["stream"]:
            print(f"differs {item['id']}:\n  offline: {item['offline']}\n  stream:  {item['stream']}")
    out = args.json or RESULTS / f"stream-vs-offline-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "items": items}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
