"""Streaming test helpers: a fake model that reads tones, audio that spells text, a live server.

:class:`ToneModel` reads its input: each output frame looks at the loudest mel band of its
feature frame and emits the letter whose tone sits there; a silent frame right after a tone,
followed by a long enough silence, emits the word delimiter. It looks a few frames ahead, and its
config declares a receptive field that covers that, so windowed streaming must give the same
text as offline transcription only if the windowing is right.
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI
from torch import Tensor, nn

from app.asr.bundle import Bundle
from app.asr.configs import BundleConfig, default_config
from app.asr.features import LogMelFrontend
from app.asr.model import strided_lengths
from app.asr.torch_recognizer import TorchRecognizer
from app.config import Settings
from app.engine.plan import HardwarePlan
from app.main import _Server

RATE = 16000
LETTERS = "abcdefghijklmnopqrstuvwxyz"
VOICED = 0.0  # log-mel level above which a frame holds a tone
WORD_GAP_FRAMES = 6  # silent frames after a tone that make a word boundary


def letter_frequency(letter: str) -> float:
    return 300.0 + 150.0 * LETTERS.index(letter)


def spell(
    text: str,
    rate: int = RATE,
    letter_s: float = 0.12,
    gap_s: float = 0.08,
    word_gap_s: float = 0.4,
    lead_s: float = 0.3,
    tail_s: float = 1.0,
) -> np.ndarray:
    """Audio that :class:`ToneModel` reads as ``text``: one faded tone burst per letter."""
    pieces = [np.zeros(int(lead_s * rate), np.float32)]
    n = int(letter_s * rate)
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.005 * rate))
    for w, word in enumerate(text.split()):
        if w:
            pieces.append(np.zeros(int((word_gap_s - gap_s) * rate), np.float32))
        for letter in word:
            t = np.arange(n) / rate
            pieces.append((0.3 * fade * np.sin(2 * math.pi * letter_frequency(letter) * t)).astype(np.float32))
            pieces.append(np.zeros(int(gap_s * rate), np.float32))
    pieces.append(np.zeros(int(tail_s * rate), np.float32))
    return np.concatenate(pieces)


def tone_config(name: str = "tone-model") -> BundleConfig:
    """The default frontend and vocabulary with a small network (receptive radius 65 frames)."""
    config = default_config(name)
    config.model.blocks = config.model.blocks[:2] + config.model.blocks[-1:]
    return config


class ToneModel(nn.Module):
    """Letters from tones (see the module docstring). Records batch sizes and window lengths."""

    def __init__(self, config: BundleConfig) -> None:
        super().__init__()
        self.config = config
        self.stride = config.model.stride
        frontend = LogMelFrontend(config.frontend)
        peaks = []
        for letter in LETTERS:
            t = torch.arange(RATE // 2) / RATE
            wave = (0.3 * torch.sin(2 * math.pi * letter_frequency(letter) * t))[None]
            features, _ = frontend(wave, torch.tensor([RATE // 2]))
            peaks.append(int(features[0, :, 5].argmax()))
        bins = torch.arange(config.frontend.n_mels)[:, None]
        nearest = (bins - torch.tensor(peaks)[None, :]).abs().argmin(dim=1)
        self.bin_token = torch.tensor([config.tokens.index(LETTERS[i]) for i in nearest.tolist()])
        self.delimiter = config.tokens.index(config.word_delimiter)
        self.batch_sizes: list[int] = []
        self.lengths: list[int] = []

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        self.batch_sizes.append(int(features.shape[0]))
        self.lengths.extend(int(n) for n in lengths)
        out_lengths = strided_lengths(lengths, self.stride)
        frames = int(out_lengths.max())
        picked = features[:, :, :: self.stride][:, :, :frames]  # (batch, n_mels, frames)
        peak, band = picked.max(dim=1)
        voiced = peak > VOICED
        token = torch.where(voiced, self.bin_token[band], self.config.blank_id)
        ahead = torch.nn.functional.pad(voiced, (1, WORD_GAP_FRAMES))  # frames -1 .. frames+gap-1
        after_tone = ahead[:, :frames] & ~voiced
        quiet_ahead = ~torch.stack([ahead[:, 2 + k : 2 + k + frames] for k in range(WORD_GAP_FRAMES - 1)]).any(0)
        token = torch.where(after_tone & quiet_ahead, self.delimiter, token)
        probs = torch.full((features.shape[0], frames, len(self.config.tokens)), 1e-3)
        probs.scatter_(2, token[..., None], 1.0)
        return torch.log(probs / probs.sum(-1, keepdim=True)), out_lengths

    def num_parameters(self) -> int:
        return 0


class ToneFactory:
    """A recognizer factory for ``create_app`` that serves :class:`ToneModel`."""

    def __init__(self, second_pass: object | None = None) -> None:
        self.config = tone_config()
        self.model = ToneModel(self.config)
        self.second_pass = second_pass

    def __call__(self, settings: Settings, hardware: HardwarePlan | None = None) -> TorchRecognizer:
        bundle = Bundle(Path("tone"), self.config, LogMelFrontend(self.config.frontend), self.model)  # type: ignore[arg-type]
        bundle.second_pass = self.second_pass  # type: ignore[assignment]
        return TorchRecognizer(bundle, device="cpu", precision="fp32")


def pcm16(wave: np.ndarray) -> bytes:
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(app: FastAPI) -> Iterator[tuple[str, _Server]]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL and server."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = _Server(config, app)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server did not start")
            thread.join(0.02)
        yield f"127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(30)
