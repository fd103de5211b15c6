"""Stream endpointing on noisy audio: utterance boundaries found, missed and false finals, per gate.

Each test stream is noise alone for a few seconds, then utterances with pauses between them
(known boundaries), then noise again; the noise is babble (the sum of other speech clips) or
coloured noise (pink, brown) at a given SNR, or none. The stream goes through the real
:class:`~app.engine.streaming.StreamSession` in 100 ms pieces, over an engine whose model
emits only blanks: finals then come from the speech gate alone (Silero VAD or frame energy),
with the session's own endpoint, preroll and forced-cut logic.

A boundary is *found* when a final ends within ``silence_ms`` + ``--tolerance`` after its
utterance's speech ends (and before the next one starts); every other final, the one at the
end of the stream excepted, is *false*: inside an utterance (``split``) or in noise.

Speech: espeak-ng sentences (``espeak``) and speechocean762 *training* clips (``so762``, from
data/manifests/so762_train.jsonl), each clip's speech extent measured on the clean clip (frames
within 35 dB of its loudest), clips with an inner pause of 0.4 s or more left out.

It also cuts each noisy stream as a long upload is cut (``--chunk-s`` pieces, each cut in the
last 2 s before its nominal end) by energy (:func:`~app.asr.segment.split_points`) and by the
VAD, and counts the cuts that fall inside an utterance.

Usage: python -m bench.endpointing [--streams 4] [--utterances 8] [--out bench/results/endpointing.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.asr.audio import decode_audio
from app.asr.configs import BundleConfig, default_config
from app.asr.ctc import GreedyDecoder, Hypothesis
from app.asr.options import DecodeOptions
from app.asr.resample import resample
from app.asr.segment import split_points
from app.asr.vad import FRAME, SileroVad
from app.engine.events import Final, StreamEvent
from app.engine.streaming import StreamOptions, StreamSession, StreamTuning
from app.metrics import Metrics
from bench.workload import SENTENCES, VOICES, speak

RATE = 16000
SPEECH_DBFS = -26.0  # speech level (RMS over its active extent) of every test stream
CHUNK = RATE // 10  # samples per pushed piece (100 ms)
MANIFEST = Path("data/manifests/so762_train.jsonl")
RESULTS = Path(__file__).resolve().parent / "results"
NOISES = ("babble", "pink", "brown")
SNRS = (20, 10, 5)
GATES = ("silero", "energy")


@dataclass
class Clip:
    audio: np.ndarray  # (samples,) at 16 kHz, trimmed to its speech extent
    source: str


class BlankEngine:
    """The parts of the engine a stream session uses, with a model that emits only blanks."""

    def __init__(self) -> None:
        self.config: BundleConfig = default_config("endpointing")
        self.greedy_decoder = GreedyDecoder(self.config.tokens, self.config.blank_id, self.config.frame_seconds)
        self._frame = self.config.frontend.hop_length * self.config.model.stride

    def model_config(self, accepted: bool = False) -> BundleConfig:
        return self.config

    async def decode(self, log_probs: np.ndarray, time_offset: float, options: DecodeOptions) -> Hypothesis:
        return self.greedy_decoder.decode(log_probs, time_offset)

    async def finalize(self, audio: np.ndarray, time_offset: float, options: DecodeOptions) -> Hypothesis:
        return self.greedy_decoder.decode(await self.infer(audio, accepted=True), time_offset)

    def check(self, options: DecodeOptions, stream: bool = False) -> None:
        return None

    async def infer(self, audio: np.ndarray, priority: int = 0, *, accepted: bool = False) -> np.ndarray:
        frames = -(-audio.shape[0] // self._frame)
        log_probs = np.full((frames, len(self.config.tokens)), -30.0, dtype=np.float32)
        log_probs[:, self.config.blank_id] = 0.0
        return log_probs


async def _finals(audio: np.ndarray, tuning: StreamTuning, options: StreamOptions) -> list[float]:
    """End times (s) of the finals sent before the stream's end (the end's own final is left out)."""
    ends: list[float] = []

    async def emit(event: StreamEvent) -> None:
        if isinstance(event, Final):
            ends.append(event.end)

    stream = StreamSession(BlankEngine(), options, DecodeOptions(), emit, Metrics(), tuning)
    task = asyncio.create_task(stream.run())
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    for start in range(0, len(pcm), 2 * CHUNK):
        stream.push(pcm[start : start + 2 * CHUNK])
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    sent = list(ends)
    stream.finish("eof")
    await task
    return sent


def stream_finals(audio: np.ndarray, gate: str, silence_ms: int = 600, threshold: float = 0.5) -> list[float]:
    """The end times of the finals a live stream of ``audio`` gets with ``gate``, before its end."""
    tuning = StreamTuning(vad=gate, vad_threshold=threshold)  # type: ignore[arg-type]
    options = StreamOptions(silence_ms=silence_ms, interim_results=False)
    return asyncio.run(_finals(audio, tuning, options))


def speech_extent(audio: np.ndarray, floor_db: float = 35.0) -> tuple[int, int, float]:
    """First and last sample of the 10 ms frames within ``floor_db`` of the loudest; the longest inner gap (s)."""
    n = audio.shape[0] // 160
    power = np.square(audio[: n * 160].reshape(n, 160)).mean(axis=1) + 1e-12
    active = np.flatnonzero(10 * np.log10(power / power.max()) > -floor_db)
    gaps = np.diff(active) - 1
    return int(active[0]) * 160, (int(active[-1]) + 1) * 160, float(gaps.max(initial=0)) * 0.01


def _trimmed(audio: np.ndarray, source: str) -> Clip | None:
    start, end, gap = speech_extent(audio)
    if gap >= 0.4 or end - start < RATE // 2:
        return None
    return Clip(audio[start:end].copy(), source)


def espeak_clips(count: int, rng: np.random.Generator) -> list[Clip]:
    clips: list[Clip] = []
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(count):
            sentence = SENTENCES[i % len(SENTENCES)]
            wave, rate = speak(sentence, str(rng.choice(VOICES)), int(rng.integers(140, 190)), Path(scratch))
            clip = _trimmed(resample(wave, rate, RATE), "espeak")
            if clip is not None:
                clips.append(clip)
    return clips


def so762_clips(count: int, rng: np.random.Generator) -> list[Clip]:
    rows = [json.loads(line) for line in MANIFEST.read_text().splitlines()]
    clips: list[Clip] = []
    for index in rng.permutation(len(rows)):
        path = Path(rows[index]["audio"])
        clip = _trimmed(decode_audio(path.read_bytes(), RATE), "so762")
        if clip is not None:
            clips.append(clip)
        if len(clips) == count:
            break
    return clips


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def coloured(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) or brown (1/f^2) noise of unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    f[0] = f[1]
    spectrum /= np.sqrt(f) if kind == "pink" else f
    spectrum[f < 20] = 0  # no DC drift
    out = np.fft.irfft(spectrum, n)
    return out / rms(out)


def babble(pool: list[Clip], n: int, rng: np.random.Generator, talkers: int = 6) -> np.ndarray:
    """The sum of ``talkers`` streams of back-to-back speech clips, of unit RMS."""
    out = np.zeros(n)
    for _ in range(talkers):
        talker = np.concatenate([pool[i].audio / rms(pool[i].audio) for i in rng.permutation(len(pool))])
        talker = np.tile(talker, -(-n // talker.shape[0]) + 1)
        offset = int(rng.integers(0, talker.shape[0] - n))
        out += talker[offset : offset + n]
    return out / rms(out)


@dataclass
class Stream:
    audio: np.ndarray  # speech only, at SPEECH_DBFS
    spans: list[tuple[float, float]]  # each utterance's speech, in seconds


def build_stream(clips: list[Clip], rng: np.random.Generator, lead_s: float = 4.0, tail_s: float = 3.0) -> Stream:
    pieces = [np.zeros(int(lead_s * RATE))]
    spans, at = [], pieces[0].shape[0]
    level = 10 ** (SPEECH_DBFS / 20)
    for i, clip in enumerate(clips):
        speech = clip.audio / rms(clip.audio) * level
        spans.append((at / RATE, (at + speech.shape[0]) / RATE))
        pause = tail_s if i == len(clips) - 1 else rng.uniform(1.2, 2.5)
        pieces += [speech, np.zeros(int(pause * RATE))]
        at += speech.shape[0] + pieces[-1].shape[0]
    return Stream(np.concatenate(pieces), spans)


def score(finals: list[float], spans: list[tuple[float, float]], window_s: float) -> dict[str, Any]:
    """Boundaries found and missed, false finals (split: inside an utterance; noise: elsewhere), latency."""
    found: dict[int, float] = {}
    split = noise = 0
    for end in finals:
        hit = next((i for i, (_, e) in enumerate(spans) if e <= end <= e + window_s), None)
        nxt = spans[hit + 1][0] if hit is not None and hit + 1 < len(spans) else float("inf")
        if hit is not None and hit not in found and end < nxt:
            found[hit] = end - spans[hit][1]
        elif any(s <= end <= e for s, e in spans):
            split += 1
        else:
            noise += 1
    latency = float(np.mean(list(found.values()))) if found else None
    return {
        "boundaries": len(spans),
        "found": len(found),
        "missed": len(spans) - len(found),
        "false_finals": split + noise,
        "false_split": split,
        "false_in_noise": noise,
        "mean_latency_s": None if latency is None else round(latency, 3),
    }


def vad_split_points(audio: np.ndarray, chunk_seconds: float, search_seconds: float = 2.0) -> list[int]:
    """As :func:`split_points`, but each cut at the frame of least speech probability (Silero)."""
    probs = SileroVad().probabilities(audio)
    chunk, search = int(chunk_seconds * RATE), min(int(search_seconds * RATE), int(chunk_seconds * RATE) // 2)
    starts = [0]
    while audio.shape[0] - starts[-1] > chunk:
        lo, end = (starts[-1] + chunk - search) // FRAME, (starts[-1] + chunk) // FRAME
        starts.append((lo + int(np.argmin(probs[lo:end]))) * FRAME)
    return starts


def cuts_in_speech(audio: np.ndarray, spans: list[tuple[float, float]], chunk_s: float) -> dict[str, int]:
    """Cuts of a long upload that fall inside an utterance, by energy (today's split) and by the VAD."""
    inside = {}
    for name, starts in (("energy", split_points(audio, RATE, chunk_s)), ("silero", vad_split_points(audio, chunk_s))):
        inside[name] = sum(any(s <= c / RATE <= e for s, e in spans) for c in starts[1:])
    return inside | {"cuts": len(split_points(audio, RATE, chunk_s)) - 1}


def add(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key in ("boundaries", "found", "missed", "false_finals", "false_split", "false_in_noise"):
        total[key] = total.get(key, 0) + part[key]
    if part["mean_latency_s"] is not None:
        total.setdefault("_latencies", []).append((part["mean_latency_s"], part["found"]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    need = args.streams * args.utterances
    sources: list[Clip] = []
    if "espeak" in args.sources and shutil.which("espeak-ng"):
        sources += espeak_clips(need + 12, rng)
    if "so762" in args.sources and MANIFEST.exists():
        sources += so762_clips(need + 12, rng)
    by_source = {s: [c for c in sources if c.source == s] for s in {c.source for c in sources}}
    window_s = args.silence_ms / 1000 + args.tolerance
    results: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {g: 0.0 for g in GATES}
    audio_s = 0.0
    cuts: dict[str, dict[str, int]] = {}
    for source, pool in sorted(by_source.items()):
        fore, back = pool[:need], pool[need:]  # babble talkers are never the foreground speakers
        for s in range(args.streams):
            stream = build_stream(fore[s * args.utterances : (s + 1) * args.utterances], rng)
            n = stream.audio.shape[0]
            for noise in ("none", *NOISES):
                for snr in (None,) if noise == "none" else SNRS:
                    shape = babble(back, n, rng) if noise == "babble" else coloured(noise, n, rng)
                    level = 0.0 if snr is None else 10 ** ((SPEECH_DBFS - snr) / 20)
                    audio = (stream.audio + level * shape).astype(np.float32)
                    audio_s += n / RATE
                    label = f"{noise}|{snr if snr is not None else '-'}"
                    for k, v in cuts_in_speech(audio, stream.spans, args.chunk_s).items():
                        cuts.setdefault(label, {}).setdefault(k, 0)
                        cuts[label][k] += v
                    for gate in GATES:
                        started = time.perf_counter()
                        finals = stream_finals(audio, gate, args.silence_ms, args.threshold)
                        timings[gate] += time.perf_counter() - started
                        key = f"{source}|{noise}|{snr if snr is not None else '-'}|{gate}"
                        add(results.setdefault(key, {}), score(finals, stream.spans, window_s))
    for total in results.values():
        pairs = total.pop("_latencies", [])
        weight = sum(w for _, w in pairs)
        total["mean_latency_s"] = round(sum(m * w for m, w in pairs) / weight, 3) if weight else None
    return {
        "settings": vars(args) | {"speech_dbfs": SPEECH_DBFS, "window_s": window_s},
        "clips": {source: len(pool) for source, pool in by_source.items()},
        "session_seconds_per_audio_second": {g: round(t / max(audio_s, 1e-9), 5) for g, t in timings.items()},
        "results": results,
        "upload_cuts_in_speech": cuts,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "| speech | noise | SNR dB | gate | found / boundaries | missed | false finals (split / noise) | latency s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, r in report["results"].items():
        source, noise, snr, gate = key.split("|")
        false = f"{r['false_finals']} ({r['false_split']} / {r['false_in_noise']})"
        latency = "-" if r["mean_latency_s"] is None else f"{r['mean_latency_s']:.2f}"
        found = f"{r['found']} / {r['boundaries']}"
        lines.append(f"| {source} | {noise} | {snr} | {gate} | {found} | {r['missed']} | {false} | {latency} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=4, help="test streams per speech source")
    parser.add_argument("--utterances", type=int, default=8, help="utterances per stream")
    parser.add_argument("--sources", nargs="+", default=["espeak", "so762"], choices=["espeak", "so762"])
    parser.add_argument("--silence-ms", type=int, default=600, help="the streams' endpointing silence")
    parser.add_argument("--threshold", type=float, default=0.5, help="Silero's speech threshold")
    parser.add_argument("--tolerance", type=float, default=0.5, help="seconds past silence_ms a final may come")
    parser.add_argument("--chunk-s", type=float, default=8.0, help="piece length of the upload-splitting check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "endpointing.json")
    args = parser.parse_args()
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report | {"settings": {**report["settings"], "out": str(args.out)}}, indent=1))
    print(table(report))
    print("upload cuts inside speech (of cuts):", report["upload_cuts_in_speech"])
    print("session CPU s per audio s:", report["session_seconds_per_audio_second"], "clips:", report["clips"])


if __name__ == "__main__":
    main()
