"""Greedy transcription of in-memory utterances and WER/CER scoring, shared by training and evaluation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import jiwer
import numpy as np
import torch
from torch import Tensor

from app.asr.configs import BundleConfig
from app.asr.ctc import greedy_decode
from app.asr.features import LogMelFrontend
from train.data.audio_io import SAMPLE_RATE

logger = logging.getLogger(__name__)

AcousticModel = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""(features (batch, n_mels, frames), lengths) -> (log_probs (batch, frames_out, vocab), lengths)."""


@dataclass
class Score:
    """Error rates of one test set (fractions, not percentages)."""

    wer: float
    cer: float
    utterances: int
    hours: float


def transcribe(
    model: AcousticModel,
    frontend: LogMelFrontend,
    config: BundleConfig,
    waves: list[np.ndarray],
    device: torch.device | str = "cpu",
    batch_seconds: float = 200.0,
) -> list[str]:
    """Greedy transcripts of float32 16 kHz waveforms, batched by length (order preserved)."""
    order = sorted(range(len(waves)), key=lambda i: waves[i].size)
    texts = [""] * len(waves)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and waves[order[end]].size * (end - start + 1) <= batch_seconds * SAMPLE_RATE:
            end += 1
        rows = order[start:end]
        for i, text in zip(rows, _decode_batch(model, frontend, config, [waves[i] for i in rows], device), strict=True):
            texts[i] = text
        start = end
    return texts


@torch.no_grad()
def _decode_batch(
    model: AcousticModel,
    frontend: LogMelFrontend,
    config: BundleConfig,
    waves: list[np.ndarray],
    device: torch.device | str,
) -> list[str]:
    lengths = torch.tensor([w.size for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for row, wave in enumerate(waves):
        batch[row, : wave.size] = torch.from_numpy(wave)
    feats, frame_lengths = frontend(batch.to(device), lengths.to(device))
    log_probs, out_lengths = model(feats, frame_lengths)
    hyps = greedy_decode(log_probs.cpu(), out_lengths.cpu(), config.tokens, config.blank_id, config.frame_seconds)
    return [h.text for h in hyps]


def score(references: list[str], hypotheses: list[str], seconds: float = 0.0) -> Score:
    """Corpus-level WER and CER with jiwer (empty references are skipped)."""
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    if not pairs:
        return Score(wer=float("nan"), cer=float("nan"), utterances=0, hours=seconds / 3600)
    refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
    return Score(
        wer=float(jiwer.wer(refs, hyps)), cer=float(jiwer.cer(refs, hyps)), utterances=len(pairs), hours=seconds / 3600
    )
