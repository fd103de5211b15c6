"""Transcripts as the server makes them, and WER/CER scoring, shared by training and evaluation.

The recognizer is the server's (:func:`app.asr.recognizer.open_recognizer`), long audio is cut
and stitched where the server cuts it (:mod:`app.asr.segment`, at the server's default
``chunk_seconds``), and the decoder is the server's greedy one (:class:`app.asr.ctc.GreedyDecoder`),
so the WER measured is the WER served.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import torch

from app.asr import vad
from app.asr.bundle import Bundle
from app.asr.configs import BundleConfig
from app.asr.ctc import GreedyDecoder, Hypothesis
from app.asr.features import LogMelFrontend
from app.asr.model import SepConvCTC
from app.asr.recognizer import Recognizer
from app.asr.segment import cut_pieces, stitch
from app.asr.torch_recognizer import build_recognizer
from app.config import Settings
from app.engine.plan import resolve_split

logger = logging.getLogger(__name__)

CHUNK_SECONDS: float = Settings.model_fields["chunk_seconds"].default
"""The server's default piece length for long audio (``ASR_CHUNK_SECONDS``)."""


@dataclass
class Score:
    """Error rates of one test set (fractions, not percentages)."""

    wer: float
    cer: float
    utterances: int
    hours: float


def greedy_decoder(config: BundleConfig) -> GreedyDecoder:
    """The server's default decoder for a model (the engine builds it from the same fields)."""
    return GreedyDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)


def training_recognizer(model: SepConvCTC, config: BundleConfig, device: torch.device) -> Recognizer:
    """The served recognizer of a model in training: eager PyTorch, batch norms folded, fp32 on ``device``.

    It runs a folded copy, so the model being trained is left as it is.
    """
    bundle = Bundle(Path(config.name), config, LogMelFrontend(config.frontend), model)
    return build_recognizer(bundle, runtime="torch", device=device.type, precision="fp32")


def transcribe(
    recognizer: Recognizer,
    waves: Sequence[np.ndarray],
    chunk_seconds: float = CHUNK_SECONDS,
    batch_seconds: float = 200.0,
) -> list[str]:
    """Greedy transcripts of float32 waveforms at the model's rate, as the server's ``/transcribe`` makes them.

    Each wave is cut into pieces where the server cuts it (by default: ``ASR_SPLIT=auto``, at pauses
    where Silero VAD is installed); pieces run through ``recognizer.infer``
    in batches of similar length (order preserved), are decoded with the server's greedy decoder
    at their offsets and stitched back per wave.
    """
    rate = recognizer.config.sample_rate
    at_pauses = resolve_split("auto", vad.installed(), rate, second_pass=False) == "pauses"
    decoder = greedy_decoder(recognizer.config)
    owners: list[int] = []  # the wave each piece belongs to
    offsets: list[float] = []  # seconds
    pieces: list[np.ndarray] = []
    for index, wave in enumerate(waves):
        for start, end in cut_pieces(wave, rate, chunk_seconds, at_pauses):
            owners.append(index)
            offsets.append(start / rate)
            pieces.append(wave[start:end])
    decoded: dict[int, Hypothesis] = {}
    for rows in length_batches([p.shape[0] for p in pieces], int(batch_seconds * rate)):
        for row, log_probs in zip(rows, recognizer.infer([pieces[i] for i in rows]), strict=True):
            decoded[row] = decoder.decode(log_probs, offsets[row])
    per_wave: list[list[Hypothesis]] = [[] for _ in waves]
    for row, owner in enumerate(owners):
        per_wave[owner].append(decoded[row])
    return [stitch(own, [0.0] * len(own)).text for own in per_wave]


def length_batches(sizes: list[int], max_padded: int) -> list[list[int]]:
    """Indices of ``sizes`` sorted by size, grouped so each group's padded total stays within ``max_padded``."""
    order = sorted(range(len(sizes)), key=sizes.__getitem__)
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and sizes[order[end]] * (end - start + 1) <= max_padded:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def score(references: list[str], hypotheses: list[str], seconds: float = 0.0) -> Score:
    """Corpus-level WER and CER with jiwer (empty references are skipped)."""
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    if not pairs:
        return Score(wer=float("nan"), cer=float("nan"), utterances=0, hours=seconds / 3600)
    refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
    return Score(
        wer=float(jiwer.wer(refs, hyps)), cer=float(jiwer.cer(refs, hyps)), utterances=len(pairs), hours=seconds / 3600
    )
