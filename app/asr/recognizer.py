"""The recognizer: a batch of waveforms in, per-utterance CTC log-probabilities out.

It glues the feature frontend and the acoustic model, and owns device and precision choices.
Decoding the log-probabilities into text is the decoders' job (``app.asr.ctc``), so it can run
in parallel with the next batch. It is not thread-safe: the engine calls it from one thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from app.asr.bundle import Bundle
from app.asr.configs import BundleConfig

logger = logging.getLogger(__name__)

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Recognizer(Protocol):
    """What the engine needs from a speech recognizer."""

    config: BundleConfig
    device: str
    precision: str

    def infer(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-utterance (frames, vocab) float32 log-probs of mono waveforms at ``config.sample_rate``."""
        ...

    def num_parameters(self) -> int:
        """Parameter count of the acoustic model."""
        ...


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("ASR_DEVICE=cuda but no CUDA device is available")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` is fp16 on CUDA and fp32 on CPU; half precisions need CUDA."""
    if precision == "auto":
        return "fp16" if device == "cuda" else "fp32"
    if precision in _DTYPES and device != "cuda":
        raise RuntimeError(f"precision {precision} needs a CUDA device; use fp32 on CPU")
    return precision


class TorchRecognizer:
    """Eager PyTorch inference of a loaded :class:`Bundle`."""

    def __init__(self, bundle: Bundle, device: str = "auto", precision: str = "auto") -> None:
        self.bundle = bundle
        self.config = bundle.config
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.frontend = bundle.frontend.to(self.device).eval()
        self.model = bundle.model.to(self.device).eval()

    def num_parameters(self) -> int:
        return self.bundle.num_parameters()

    @torch.inference_mode()
    def infer(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not waveforms:
            return []
        batch, lengths = pad_batch(waveforms, self.device)
        log_probs, out_lengths = self.forward(batch, lengths)
        log_probs_np = log_probs.float().cpu().numpy()
        return [log_probs_np[row, :n] for row, n in enumerate(out_lengths.tolist())]

    def forward(self, batch: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, samples) audio -> (batch, frames, vocab) log-probs and frame lengths."""
        features, frame_lengths = self.frontend(batch, lengths)
        dtype = _DTYPES.get(self.precision)
        autocast = torch.autocast(self.device, dtype=dtype) if dtype is not None else nullcontext()
        with autocast:
            return self.model(features, frame_lengths)


def pad_batch(waveforms: Sequence[np.ndarray], device: str = "cpu") -> tuple[Tensor, Tensor]:
    """Stack mono waveforms into a zero-padded (batch, samples) tensor plus lengths."""
    lengths = torch.tensor([w.shape[0] for w in waveforms], dtype=torch.long)
    batch = torch.zeros(len(waveforms), int(lengths.max()), dtype=torch.float32)
    for row, wave in enumerate(waveforms):
        batch[row, : wave.shape[0]] = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    if device != "cpu":
        batch = batch.pin_memory().to(device, non_blocking=True)
        lengths = lengths.to(device)
    return batch, lengths
