"""Cutting long recordings into pieces at quiet points, and stitching their results back."""

from __future__ import annotations

import numpy as np

from app.asr.ctc import Hypothesis, Word


def split_points(audio: np.ndarray, sample_rate: int, chunk_seconds: float, search_seconds: float = 2.0) -> list[int]:
    """Sample offsets where to cut ``audio`` into pieces of at most about ``chunk_seconds``.

    Each cut is placed at the quietest 20 ms window within ``search_seconds`` before the nominal
    boundary, so words are rarely split. Returns the start offsets, beginning with 0.
    """
    chunk = int(chunk_seconds * sample_rate)
    if audio.shape[0] <= chunk:
        return [0]
    window = max(1, int(0.02 * sample_rate))
    search = min(int(search_seconds * sample_rate), chunk // 2)
    starts = [0]
    while audio.shape[0] - starts[-1] > chunk:
        end = starts[-1] + chunk
        lo = end - search
        region = audio[lo:end]
        n = region.shape[0] // window
        energy = np.square(region[: n * window].reshape(n, window)).mean(axis=1)
        starts.append(lo + int(np.argmin(energy)) * window)
    return starts


def stitch(pieces: list[Hypothesis], offsets_seconds: list[float]) -> Hypothesis:
    """Join per-piece hypotheses into one, shifting word times by each piece's offset."""
    words: list[Word] = []
    for hyp, offset in zip(pieces, offsets_seconds, strict=True):
        for w in hyp.words:
            words.append(Word(w.word, round(w.start + offset, 3), round(w.end + offset, 3), w.confidence))
    return Hypothesis(text=" ".join(w.word for w in words), words=words)
