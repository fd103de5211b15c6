"""CTC forced alignment of second-pass text: word times from the frames the CTC model puts them on."""

from __future__ import annotations

import numpy as np

from app.asr.align import AlignedDecoder, SecondPassOutput
from app.asr.configs import ENGLISH_CHARS

FRAME_S = 0.02


def frames_spelling(text: str, first: int, frames: int, gap: int = 2) -> np.ndarray:
    """(frames, vocab) log-probs that read ``text`` one character every ``gap`` frames from ``first``."""
    probs = np.full((frames, len(ENGLISH_CHARS)), 1e-4, np.float32)
    probs[:, 0] = 1.0
    for i, ch in enumerate(text):
        frame = first + gap * i
        probs[frame] = 1e-4
        probs[frame, ENGLISH_CHARS.index(ch)] = 0.9
    return np.log(probs / probs.sum(axis=1, keepdims=True))


def decoder() -> AlignedDecoder:
    return AlignedDecoder(list(ENGLISH_CHARS), 0, FRAME_S)


def test_words_land_on_the_frames_that_spell_them() -> None:
    log_probs = frames_spelling("hi there", first=10, frames=60)
    hyp = decoder().align(SecondPassOutput(log_probs, "Hi, there!"), time_offset=1.0)
    assert hyp.text == "hi there"
    assert [(w.word, w.start, w.end) for w in hyp.words] == [
        ("hi", round(1.0 + 10 * FRAME_S, 3), round(1.0 + 13 * FRAME_S, 3)),
        ("there", round(1.0 + 16 * FRAME_S, 3), round(1.0 + 25 * FRAME_S, 3)),
    ]
    assert all(w.confidence > 0.8 for w in hyp.words)


def test_text_the_ctc_path_did_not_hear_is_aligned_with_low_confidence() -> None:
    log_probs = frames_spelling("hi there", first=10, frames=60)
    hyp = decoder().align(SecondPassOutput(log_probs, "I have 3 cats."))
    assert hyp.text == "i have three cats"
    starts = [w.start for w in hyp.words]
    assert starts == sorted(starts) and hyp.words[-1].end <= 60 * FRAME_S
    assert min(w.confidence for w in hyp.words) < 0.5


def test_repeated_letters_and_too_few_frames() -> None:
    log_probs = frames_spelling("all", first=2, frames=12)
    hyp = decoder().align(SecondPassOutput(log_probs, "all"))
    assert [(w.start, w.end) for w in hyp.words] == [(2 * FRAME_S, 7 * FRAME_S)]
    short = decoder().align(SecondPassOutput(log_probs[:3], "a long sentence here"))
    assert short.text == "a long sentence here" and all(w.confidence == 0.0 for w in short.words)
    assert decoder().align(SecondPassOutput(log_probs, " ... ")).text == ""
