"""A reproducible mixed-length workload: synthetic speech clips of 1-30 s, cached as WAV files.

Clips are spoken by espeak-ng (several voices and speaking rates, chosen by the seed) from
public-domain Harvard sentences, concatenated until the clip's target length and cut there
with a short fade. Without espeak-ng the clips fall back to a speech-like synthetic signal
(voiced buzz with syllable-rate loudness) and the manifest says so: throughput does not depend
on the words, but say which you measured.

    python -m bench.workload --clips 64 --seed 1234     # writes bench/results/workload/
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from app.asr.resample import resample

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
WORKLOAD_DIR = RESULTS / "workload"
RATE = 16000
FORMAT_VERSION = 1

SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
)
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp", "en-029", "en-us+m3", "en-gb-scotland", "en-us+f2")


@dataclass(frozen=True)
class Clip:
    """One workload clip: its file (relative to the workload folder), duration and how it was made."""

    file: str
    seconds: float
    voice: str
    words_per_minute: int
    text: str


@dataclass(frozen=True)
class Workload:
    """The clips, where they live, and the parameters that made them."""

    folder: Path
    clips: list[Clip]
    seed: int
    source: str

    @property
    def total_seconds(self) -> float:
        return sum(c.seconds for c in self.clips)

    def path(self, clip: Clip) -> Path:
        return self.folder / clip.file

    def describe(self) -> dict[str, object]:
        seconds = [c.seconds for c in self.clips]
        return {
            "clips": len(self.clips),
            "seed": self.seed,
            "source": self.source,
            "total_seconds": round(self.total_seconds, 2),
            "min_seconds": round(min(seconds), 2),
            "max_seconds": round(max(seconds), 2),
            "mean_seconds": round(self.total_seconds / len(seconds), 2),
        }


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str, wpm: int, scratch: Path) -> tuple[np.ndarray, int]:
    """espeak-ng's rendering of ``text``: mono float32 and its sample rate."""
    out = scratch / "tts.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(out), text],
        check=True,
        capture_output=True,
        timeout=60,
    )
    audio, rate = sf.read(out, dtype="float32", always_2d=True)
    return audio.mean(axis=1), int(rate)


def speech_like(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A voiced buzz (random pitch glides) with syllable-rate loudness, when no TTS is installed."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    pitch = 110 + 40 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    buzz = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3.5, 5.0) * t), 0, None) ** 2
    return (0.2 * buzz * syllables + 0.003 * rng.standard_normal(n)).astype(np.float32)


def make_clip(target: float, rng: np.random.Generator, scratch: Path, use_tts: bool) -> tuple[np.ndarray, Clip]:
    """Concatenate sentences (0.25 s apart) until ``target`` seconds, then cut with a 30 ms fade."""
    voice = str(rng.choice(VOICES))
    wpm = int(rng.integers(140, 200))
    need = int(target * RATE)
    if not use_tts:
        return speech_like(target, rng), Clip("", round(need / RATE, 4), "synthetic", 0, "")
    parts: list[np.ndarray] = []
    words: list[str] = []
    total, rate = 0.0, RATE
    while total < target + 0.1:
        sentence = str(rng.choice(SENTENCES))
        audio, rate = speak(sentence, voice, wpm, scratch)
        parts += [audio, np.zeros(int(0.25 * rate), np.float32)]
        words.append(sentence)
        total += (audio.shape[0] + int(0.25 * rate)) / rate
    clip = resample(np.concatenate(parts), rate, RATE)[:need].copy()
    fade = min(need, int(0.03 * RATE))
    clip[need - fade :] *= np.linspace(1, 0, fade, dtype=np.float32)
    return clip, Clip("", round(need / RATE, 4), voice, wpm, " ".join(words))


def build(folder: Path, clips: int, seed: int, min_s: float, max_s: float, allow_fallback: bool = True) -> Workload:
    """Generate the workload into ``folder`` (replacing what is there) and write its manifest."""
    use_tts = espeak_available()
    if not use_tts:
        message = "espeak-ng not found (install it with scripts/install-tts.sh)"
        if not allow_fallback:
            raise SystemExit(f"workload: {message}")
        print(f"workload: {message}; using a speech-like synthetic signal instead", file=sys.stderr)
    rng = np.random.default_rng(seed)
    targets = rng.uniform(min_s, max_s, size=clips)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("clip-*.wav"):
        old.unlink()
    made: list[Clip] = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, target in enumerate(targets):
            audio, clip = make_clip(float(target), rng, Path(scratch), use_tts)
            name = f"clip-{index:03d}.wav"
            sf.write(folder / name, audio, RATE, subtype="PCM_16")
            made.append(Clip(name, clip.seconds, clip.voice, clip.words_per_minute, clip.text))
    workload = Workload(folder, made, seed, "espeak-ng" if use_tts else "synthetic")
    manifest = {
        "format_version": FORMAT_VERSION,
        "params": _params(clips, seed, min_s, max_s),
        "source": workload.source,
        "clips": [asdict(c) for c in made],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return workload


def _params(clips: int, seed: int, min_s: float, max_s: float) -> dict[str, object]:
    return {"clips": clips, "seed": seed, "min_seconds": min_s, "max_seconds": max_s, "rate": RATE}


def load(
    folder: Path = WORKLOAD_DIR, clips: int = 64, seed: int = 1234, min_s: float = 1.0, max_s: float = 30.0
) -> Workload:
    """The cached workload for these parameters, generated first if missing or different."""
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version") == FORMAT_VERSION and manifest.get("params") == _params(
            clips, seed, min_s, max_s
        ):
            made = [Clip(**c) for c in manifest["clips"]]
            if all((folder / c.file).is_file() for c in made):
                if manifest["source"] != "espeak-ng" and espeak_available():
                    logger.info("workload was synthetic; espeak-ng is now present, regenerating")
                else:
                    return Workload(folder, made, seed, manifest["source"])
    return build(folder, clips, seed, min_s, max_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=WORKLOAD_DIR, help="folder for the WAV files and manifest")
    parser.add_argument("--clips", type=int, default=64, help="number of distinct clips")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = parser.parse_args(argv)
    if args.force:
        workload = build(args.out, args.clips, args.seed, args.min_seconds, args.max_seconds)
    else:
        workload = load(args.out, args.clips, args.seed, args.min_seconds, args.max_seconds)
    print(json.dumps({"folder": str(workload.folder), **workload.describe()}))


if __name__ == "__main__":
    main()
