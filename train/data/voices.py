"""Text-to-speech voices of Debian's engines (espeak-ng, flite, festival) and how to run them."""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

ESPEAK_TRAIN_LANGS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029", "en-us-nyc"]
ESPEAK_VARIANTS = [
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt4",
    "croak",
    "iven",
    "john",
    "linda",
    "steph",
    "robert",
    "grandma",
]
FLITE_TRAIN = ["kal", "kal16", "awb", "slt"]
FESTIVAL_TRAIN = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]
HELD_OUT_ESPEAK_LANG = "en-gb-x-gbcwmd"
"""An espeak-ng accent (West Midlands) used only in the synthetic test set."""
HELD_OUT_FLITE = "rms"
"""A flite voice used only in the synthetic test set."""


@dataclass(frozen=True)
class Voice:
    """One synthesiser setting: engine, voice name, speaking-rate factor and pitch (espeak only)."""

    engine: str
    name: str
    rate: float = 1.0
    pitch: int | None = None

    @property
    def source(self) -> str:
        """Short label written to manifests, e.g. 'espeak:en-us+f3'."""
        return f"{self.engine}:{self.name}"


def sample_train_voice(rng: random.Random) -> Voice:
    """A random training voice: espeak-ng 45 %, flite 35 %, festival 20 %."""
    engine = rng.choices(["espeak", "flite", "festival"], [0.45, 0.35, 0.2])[0]
    if engine == "espeak":
        return _espeak(rng, rng.choice(ESPEAK_TRAIN_LANGS))
    if engine == "flite":
        return Voice("flite", rng.choice(FLITE_TRAIN), rate=round(rng.uniform(0.9, 1.15), 2))
    return Voice("festival", rng.choice(FESTIVAL_TRAIN), rate=rng.choice([0.9, 1.0, 1.1]))


def sample_test_voice(rng: random.Random) -> Voice:
    """A test voice: a third each from the held-out espeak accent, the held-out flite voice and training voices."""
    pick = rng.randrange(3)
    if pick < 2:
        return held_out_voice(rng, pick)
    return sample_train_voice(rng)


def held_out_voice(rng: random.Random, pick: int | None = None) -> Voice:
    """One of the two voices no training set speaks: the espeak accent (``pick`` 0) or the flite voice
    (1); a random one of the two when ``pick`` is None."""
    if (rng.randrange(2) if pick is None else pick) == 0:
        return _espeak(rng, HELD_OUT_ESPEAK_LANG)
    return Voice("flite", HELD_OUT_FLITE, rate=round(rng.uniform(0.95, 1.1), 2))


def _espeak(rng: random.Random, lang: str) -> Voice:
    variant = rng.choice(ESPEAK_VARIANTS)
    name = f"{lang}+{variant}" if variant else lang
    return Voice("espeak", name, rate=round(rng.uniform(0.85, 1.1), 2), pitch=rng.randint(30, 70))


def synthesize_simple(voice: Voice, text: str, wav_path: Path) -> None:
    """Synthesise one sentence with espeak-ng or flite into ``wav_path``."""
    if voice.engine == "espeak":
        cmd = [
            "espeak-ng",
            "-v",
            voice.name,
            "-s",
            str(int(165 * voice.rate)),
            "-p",
            str(voice.pitch or 50),
            "-w",
            str(wav_path),
            text,
        ]
    elif voice.engine == "flite":
        cmd = [
            "flite",
            "-voice",
            voice.name,
            "--setf",
            f"duration_stretch={1 / voice.rate:.3f}",
            "-t",
            text,
            "-o",
            str(wav_path),
        ]
    else:
        raise ValueError(f"use synthesize_festival for engine {voice.engine}")
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def synthesize_festival(voice: Voice, items: list[tuple[str, Path]]) -> None:
    """Synthesise many (text, wav path) pairs with one festival process for ``voice``."""
    lines = [f"(voice_{voice.name})", f"(Parameter.set 'Duration_Stretch {1 / voice.rate:.3f})"]
    for text, path in items:
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" \'riff)')
    script = "\n".join(lines) + "\n"
    subprocess.run(
        ["festival", "--pipe"], input=script.encode(), check=True, capture_output=True, timeout=60 + 10 * len(items)
    )
