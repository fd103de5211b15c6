"""Endpointing on its own: trailing silence or a blank run after speech ends an utterance, an
over-long one is cut at its quietest point after its committed frames."""

from __future__ import annotations

import numpy as np

from app.asr.incremental import EnergyGate, FrameGrid, Utterance
from app.engine.endpointing import Endpointer, blank_run, cut_point

RATE = 16000
FRAME = 640  # samples per output frame (hop 160, stride 4)
BLANK, TOKEN = 0, 1


def endpointer(silence_ms: int = 600, max_utterance_s: float = 15.0) -> Endpointer:
    return Endpointer(lambda: EnergyGate(RATE, -45.0), RATE, FRAME, BLANK, silence_ms, max_utterance_s)


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def log_probs(path: list[int], blank_p: float = 0.99) -> np.ndarray:
    """(frames, 2) log-probs whose best path is ``path``; blanks at ``blank_p``."""
    probs = np.array([[blank_p, 1 - blank_p] if t == BLANK else [0.01, 0.99] for t in path])
    return np.log(probs).astype(np.float32)


def test_blank_run_counts_confident_blanks_after_the_last_token() -> None:
    assert blank_run(log_probs([BLANK] * 30), BLANK) == 0  # no speech: no run
    assert blank_run(log_probs([BLANK, TOKEN, *[BLANK] * 7]), BLANK) == 7
    unsure = np.concatenate([log_probs([TOKEN, BLANK, BLANK]), log_probs([BLANK], 0.6), log_probs([BLANK] * 4)])
    assert blank_run(unsure, BLANK) == 4  # an unsure blank breaks the run


def test_trailing_silence_after_speech_ends_the_utterance() -> None:
    end = endpointer(silence_ms=600)
    end.feed(silence(2.0))
    assert not end.due() and not end.heard_speech  # silence alone never ends one
    end.feed(tone(0.5))
    assert end.heard_speech and end.speech_in_last(RATE // 10) and not end.due()
    end.feed(silence(0.5))
    assert not end.due() and not end.speech_in_last(RATE // 10)
    end.feed(silence(0.12))
    assert end.due()
    end.reset()
    assert not end.due() and not end.heard_speech


def test_a_blank_run_as_long_as_the_silence_ends_the_utterance() -> None:
    end = endpointer(silence_ms=600)  # 15 output frames of 40 ms
    end.feed(tone(1.0))
    end.observe(log_probs([TOKEN, *[BLANK] * 14]))
    assert not end.due()
    end.observe(log_probs([TOKEN, *[BLANK] * 15]))
    assert end.due()
    end.reset()
    end.feed(tone(1.0))
    assert not end.due()  # a new utterance forgets the run


def test_too_long_at_the_utterance_limit() -> None:
    end = endpointer(max_utterance_s=2.0)
    assert not end.too_long(2 * RATE - 1)
    assert end.too_long(2 * RATE)


def test_cut_point_is_the_quietest_20ms_of_the_last_second_after_committed_frames() -> None:
    grid = FrameGrid(hop=160, n_fft=400, stride=4, radius=10)
    audio = tone(3.0)
    audio[int(2.5 * RATE) : int(2.5 * RATE) + 320] = 0.0  # 20 ms of quiet, 0.5 s before the end
    audio[int(1.0 * RATE) : int(1.0 * RATE) + 320] = 0.0  # quieter spots before the last second do not count
    utt = Utterance(grid)
    utt.append(audio)
    assert cut_point(utt, RATE) == int(2.5 * RATE)
    utt.committed_frames = int(2.8 * RATE) // FRAME  # the committed frames come first
    assert cut_point(utt, RATE) >= utt.committed_frames * FRAME
