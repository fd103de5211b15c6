"""Test helpers: a scripted fake acoustic model behind the real recognizer, and audio encoders."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch
from torch import Tensor, nn

from app.asr.bundle import Bundle, build_model, save_bundle
from app.asr.configs import BundleConfig, default_config
from app.asr.features import LogMelFrontend
from app.asr.model import strided_lengths
from app.asr.torch_recognizer import TorchRecognizer
from app.config import Settings
from app.engine.plan import HardwarePlan

SCRIPT = "hello world"
FIRST_FRAME = 10  # the fake emits SCRIPT's characters at frames 10, 12, 14, ...
RATE = 16000


class FakeAcousticModel(nn.Module):
    """Emits ``SCRIPT`` one character every other frame from frame 10, blank elsewhere.

    With 25 output frames per second, "hello" spans 0.40-0.76 s and "world" 0.88-1.24 s.
    It records every batch size it sees, and can be told to fail or to stall.
    """

    def __init__(self, config: BundleConfig, script: str = SCRIPT) -> None:
        super().__init__()
        self.config = config
        self.ids = [config.tokens.index(ch) for ch in script]
        self.batch_sizes: list[int] = []
        self.fail_next = False
        self.delay_s = 0.0
        self.gate: threading.Event | None = None

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        self.batch_sizes.append(features.shape[0])
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("simulated failure inside the model")
        out_lengths = strided_lengths(lengths, self.config.model.stride)
        frames = int(out_lengths.max())
        probs = torch.full((features.shape[0], frames, len(self.config.tokens)), 1e-4)
        probs[..., self.config.blank_id] = 1.0
        for i, token in enumerate(self.ids):
            frame = FIRST_FRAME + 2 * i
            if frame < frames:
                probs[:, frame, :] = 1e-4
                probs[:, frame, token] = 0.9
        return torch.log(probs / probs.sum(-1, keepdim=True)), out_lengths

    def num_parameters(self) -> int:
        return 0


class FakeSecondPass:
    """Stands in for Whisper's decoder: every clip reads as ``text``; records each batch's
    size and longest clip in feature frames, the CTC frames it was given per clip, and its prompt."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.batches: list[tuple[int, int]] = []
        self.ctc_frames: list[list[int]] = []
        self.prompts: list[str] = []

    def to(self, device: str) -> FakeSecondPass:
        return self

    def transcribe(
        self, features: Tensor, lengths: Tensor, ctc_log_probs: Sequence[np.ndarray] | None = None, prompt: str = ""
    ) -> list[str]:
        self.batches.append((features.shape[0], int(lengths.max())))
        self.prompts.append(prompt)
        self.ctc_frames.append([lp.shape[0] for lp in ctc_log_probs or []])
        return [self.text] * features.shape[0]


class FakeFactory:
    """A recognizer factory for ``create_app`` that serves the fake model (with a fake second
    pass reading ``second_pass_text`` when given)."""

    def __init__(
        self, load_delay_s: float = 0.0, pads_batches: bool = True, second_pass_text: str | None = None
    ) -> None:
        self.config = default_config("fake-model")
        self.pads_batches = pads_batches
        self.model = FakeAcousticModel(self.config)
        self.second_pass = FakeSecondPass(second_pass_text) if second_pass_text is not None else None
        self.load_delay_s = load_delay_s
        self.release = threading.Event()
        if not load_delay_s:
            self.release.set()

    def __call__(self, settings: Settings, hardware: HardwarePlan | None = None) -> TorchRecognizer:
        self.release.wait(self.load_delay_s or None)
        bundle = Bundle(Path("fake"), self.config, LogMelFrontend(self.config.frontend), self.model)  # type: ignore[arg-type]
        bundle.second_pass = self.second_pass  # type: ignore[assignment]
        return TorchRecognizer(bundle, device="cpu", precision="fp32", pads_batches=self.pads_batches)


def tone(seconds: float = 2.0, rate: int = RATE, freq: float = 220.0, channels: int = 1) -> np.ndarray:
    """A quiet sine tone, (samples,) or (samples, channels) float32."""
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * math.pi * freq * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


FORMATS = {  # name: (container, codec, sample rate)
    "wav": ("wav", "pcm_s16le", 16000),
    "flac": ("flac", "flac", 44100),
    "mp3": ("mp3", "libmp3lame", 44100),
    "ogg_opus": ("ogg", "libopus", 48000),
    "webm_opus": ("webm", "libopus", 48000),
    "m4a_aac": ("ipod", "aac", 44100),
}


def encode(name: str, seconds: float = 2.0, channels: int = 2) -> bytes:
    """Encode a tone in one of ``FORMATS`` (or ``ogg_vorbis``) at that format's native rate."""
    if name == "ogg_vorbis":
        buf = io.BytesIO()
        sf.write(buf, tone(seconds, 44100, channels=channels), 44100, format="OGG", subtype="VORBIS")
        return buf.getvalue()
    container, codec, rate = FORMATS[name]
    wave = tone(seconds, rate, channels=1)
    planar = np.ascontiguousarray(np.stack([wave] * channels))
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "stereo" if channels == 2 else "mono"
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=stream.layout.name)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def wav_bytes(wave: np.ndarray, rate: int = RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def make_random_bundle(path: Path, name: str = "tiny") -> Path:
    """Save a small randomly initialised bundle (for tests that need the real model code)."""
    torch.manual_seed(0)
    config = default_config(name)
    config.model.blocks = config.model.blocks[:2] + config.model.blocks[-1:]
    _, model = build_model(config)
    return save_bundle(path, config, model, f"# {name}\n\nRandomly initialised test bundle.\n")


def wait_for(condition: Callable[[], bool], timeout_s: float, message: str, interval_s: float = 0.02) -> None:
    """Poll ``condition`` until it holds; fail with ``message`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(interval_s)


DATA_ROOT = Path(os.environ.get("ASR_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
"""Real speech for tests that need it (evaluation sets only: never training)."""


def cv100_clips(count: int) -> list[tuple[np.ndarray, str]]:
    """The first ``count`` Common Voice clips of ``DATA_ROOT/cv100`` as (16 kHz audio, reference);
    skips the test when the set is absent."""
    import json

    import pytest

    from train.data.audio_io import read_audio

    manifest = DATA_ROOT / "cv100" / "manifest.jsonl"
    if not manifest.is_file():
        pytest.skip(f"real speech not found: {manifest} (set ASR_DATA)")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()[:count]]
    return [(read_audio(manifest.parent / row["audio"]), row["text"]) for row in rows]


def so762_test_clips(word: str) -> list[tuple[np.ndarray, str]]:
    """The speechocean762 ``test/`` utterances that say ``word`` (spoken form) as (16 kHz audio,
    reference); skips the test when the set is absent."""
    import pytest

    from app.asr.text import spoken_form
    from train.data.audio_io import read_audio
    from train.data.speechocean import split_rows

    folder = DATA_ROOT / "speechocean762"
    if not (folder / "test" / "text").is_file():
        pytest.skip(f"real speech not found: {folder} (set ASR_DATA)")
    rows = [row for row in split_rows(folder, "test") if word in spoken_form(row["text"]).split()]
    return [(read_audio(row["audio"]), row["text"]) for row in rows]


def spoken_manifest(root: Path, name: str, sentences: list[str]) -> Path:
    """Speak ``sentences`` with espeak-ng (en-us) into ``root`` and write their manifest ``name.jsonl``."""
    rows = []
    for i, text in enumerate(sentences):
        wav = root / f"{name}{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True)
        rows.append(json.dumps({"audio": wav.name, "text": text}))
    path = root / f"{name}.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path
