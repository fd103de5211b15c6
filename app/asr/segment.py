"""Cutting long recordings into pieces at quiet points, and stitching their results back."""

from __future__ import annotations

import numpy as np

from app.asr.ctc import Alternative, Hypothesis, Word


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


def split_spans(
    audio: np.ndarray, sample_rate: int, chunk_seconds: float, search_seconds: float = 2.0
) -> list[tuple[int, int]]:
    """The pieces :func:`split_points` cuts ``audio`` into, as (start, end) sample offsets."""
    starts = split_points(audio, sample_rate, chunk_seconds, search_seconds)
    return list(zip(starts, [*starts[1:], audio.shape[0]], strict=True))


def stitch(pieces: list[Hypothesis], offsets_seconds: list[float]) -> Hypothesis:
    """Join per-piece hypotheses into one, shifting word times by each piece's offset.

    Scores add up. The k-th alternative joins each piece's k-th alternative (or its last one,
    for a piece with fewer), so a one-piece recording keeps its N-best list as it is.
    """
    words: list[Word] = []
    for hyp, offset in zip(pieces, offsets_seconds, strict=True):
        for w in hyp.words:
            words.append(Word(w.word, round(w.start + offset, 3), round(w.end + offset, 3), w.confidence))
    scores = [hyp.score for hyp in pieces]
    score = sum(s for s in scores if s is not None) if pieces and None not in scores else None
    return Hypothesis(
        text=" ".join(w.word for w in words), words=words, score=score, alternatives=_join_alternatives(pieces)
    )


def _join_alternatives(pieces: list[Hypothesis]) -> list[Alternative]:
    if len(pieces) == 1 or not pieces or any(not hyp.alternatives for hyp in pieces):
        return list(pieces[0].alternatives) if len(pieces) == 1 else []
    joined = []
    for k in range(max(len(hyp.alternatives) for hyp in pieces)):
        chosen = [hyp.alternatives[min(k, len(hyp.alternatives) - 1)] for hyp in pieces]
        text = " ".join(alt.text for alt in chosen if alt.text)
        joined.append(Alternative(text=text, score=round(sum(alt.score for alt in chosen), 4)))
    return joined
