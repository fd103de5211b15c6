"""Cutting long recordings into pieces, and stitching their results back.

Two ways to cut (``ASR_SPLIT``, resolved by the serving plan): by length alone (:func:`split_spans`:
pieces of about ``chunk_seconds``, each cut at the quietest point before its end), or at the
speaker's pauses (:func:`pause_spans`: Silero VAD finds them; a cut goes in the middle of every pause
of at least :data:`MIN_PAUSE_S` that leaves a shortest piece (:data:`MIN_PIECE_S`, or the engine's
for the second pass) or more on both sides, and a piece still longer than ``chunk_seconds`` is then
cut by length). The models learnt from single utterances:
a piece that holds several (one speaker after another, a quiet voice after a loud one) loses words,
which cutting at pauses avoids (docs/benchmarks.md, "Long recordings").
"""

from __future__ import annotations

import numpy as np

from app.asr import vad
from app.asr.ctc import Alternative, Hypothesis, Word

MIN_PIECE_S = 3.0  # a cut at a pause leaves at least this much audio on each side (the CTC path's; see the engine)
MIN_PAUSE_S = 0.2  # shorter pauses (within a phrase) are not cut at


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


def pause_spans(
    speech: np.ndarray,
    frame: int,
    samples: int,
    rate: int,
    min_piece_s: float = MIN_PIECE_S,
    min_pause_s: float = MIN_PAUSE_S,
) -> list[tuple[int, int]]:
    """The pieces a recording of ``samples`` is cut into at its pauses, as (start, end) sample offsets.

    ``speech`` holds one decision per ``frame`` samples (:func:`app.asr.vad.recording_speech`). A
    pause is a run of non-speech frames between speech, at least ``min_pause_s`` long; the cut goes
    in its middle when at least ``min_piece_s`` lie between it and the previous cut and between it
    and the recording's end. :func:`cut_pieces` then cuts pieces that are still too long by length.
    """
    min_piece, min_pause = int(min_piece_s * rate), max(1, round(min_pause_s * rate / frame))
    cuts, run_start = [0], None
    for index, spoken in enumerate(speech.tolist()):
        if not spoken:
            run_start = index if run_start is None else run_start
            continue
        if run_start is not None and run_start > 0 and index - run_start >= min_pause:
            cut = (run_start + index) * frame // 2
            if cut - cuts[-1] >= min_piece and samples - cut >= min_piece:
                cuts.append(cut)
        run_start = None
    return list(zip(cuts, [*cuts[1:], samples], strict=True))


def searches_pauses(samples: int, rate: int, chunk_seconds: float, at_pauses: bool) -> bool:
    """Whether :func:`cut_pieces` runs the VAD over a recording of ``samples``: at pauses, at Silero's
    rate, and longer than a piece."""
    return at_pauses and rate == vad.SAMPLE_RATE and samples > chunk_seconds * rate


def cut_pieces(
    audio: np.ndarray,
    rate: int,
    chunk_seconds: float,
    at_pauses: bool,
    min_piece_s: float = MIN_PIECE_S,
    min_pause_s: float = MIN_PAUSE_S,
) -> list[tuple[int, int]]:
    """Where the engine cuts ``audio`` into pieces: (start, end) sample offsets that cover it in order.

    Audio of at most ``chunk_seconds`` is one piece. Longer audio is cut at the speaker's pauses first
    with ``at_pauses`` (:func:`pause_spans`: Silero VAD, 16 kHz only, about 600x real time on one
    core: where :func:`searches_pauses` says it runs, call this off the event loop), then any piece
    still longer than ``chunk_seconds`` by length; without ``at_pauses``, by length alone
    (:func:`split_spans`).
    """
    if not searches_pauses(audio.shape[0], rate, chunk_seconds, at_pauses):
        return split_spans(audio, rate, chunk_seconds)
    speech = vad.recording_speech(audio)
    spans = []
    for start, end in pause_spans(speech, vad.FRAME, audio.shape[0], rate, min_piece_s, min_pause_s):
        spans += [(start + a, start + b) for a, b in split_spans(audio[start:end], rate, chunk_seconds)]
    return spans


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
