"""Cutting recordings into pieces: at the speaker's pauses (Silero VAD) or by length, covering the
recording in order, each piece at most the chunk's length."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from app.asr import segment, vad
from app.asr.segment import MIN_PAUSE_S, MIN_PIECE_S, cut_pieces, pause_spans, split_spans
from bench.workload import speech_like
from tests.unit.test_vad import needs_tts, spoken

RATE = 16000
FRAME_S = vad.FRAME / RATE


def decisions(*runs: tuple[bool, float]) -> np.ndarray:
    """Per-frame speech decisions from (speech?, seconds) runs."""
    return np.concatenate([np.full(round(seconds / FRAME_S), spoken) for spoken, seconds in runs])


def test_a_cut_goes_in_the_middle_of_each_pause_that_leaves_enough_on_both_sides() -> None:
    speech = decisions(
        (False, 1.0),  # leading silence: never a cut
        (True, 4.0),
        (False, 0.512),  # cut here, in the middle
        (True, 1.0),
        (False, 0.512),  # only 1.5 s since the last cut: not here
        (True, 4.0),
        (False, 0.096),  # shorter than MIN_PAUSE_S: within a phrase
        (True, 4.0),
        (False, 0.512),  # 4 s since the last cut, but 2 s of recording left after it: not here
        (True, 1.5),
    )
    samples = speech.shape[0] * vad.FRAME
    spans = pause_spans(speech, vad.FRAME, samples, RATE)
    first = round(5.0 / FRAME_S) + round(0.512 / FRAME_S) // 2
    assert 0.096 < MIN_PAUSE_S <= 0.512 and MIN_PIECE_S > 2.0
    assert spans == [(0, first * vad.FRAME), (first * vad.FRAME, samples)]


def test_silence_alone_or_speech_without_pauses_stays_one_piece() -> None:
    for speech in (
        decisions((False, 20.0)),
        decisions((True, 20.0)),
        decisions((False, 3.5), (True, 3.5), (False, 9.0)),
    ):
        samples = speech.shape[0] * vad.FRAME
        assert pause_spans(speech, vad.FRAME, samples, RATE) == [(0, samples)]


def test_pieces_cut_at_pauses_are_cut_again_by_length(monkeypatch: pytest.MonkeyPatch) -> None:
    speech = decisions((True, 30.0), (False, 0.512), (True, 8.0), (False, 0.512), (True, 12.0))
    monkeypatch.setattr(segment.vad, "recording_speech", lambda audio, threshold=0.5: speech)
    audio = np.zeros(speech.shape[0] * vad.FRAME, np.float32)
    spans = cut_pieces(audio, RATE, 20.0, at_pauses=True)
    assert len(spans) == 4 and all(b - a <= 20 * RATE for a, b in spans)  # 30 s by length, then 8 and 12 s
    assert spans[0][0] == 0 and spans[-1][1] == audio.shape[0]
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(spans))  # nothing lost
    assert [round((b - a) / RATE, 1) for a, b in spans[2:]] == [8.5, 12.3]  # from the middles of the pauses
    assert cut_pieces(audio, RATE, 20.0, at_pauses=False) == split_spans(audio, RATE, 20.0)


@needs_tts
def test_spoken_sentences_are_cut_between_them(tmp_path: Path) -> None:
    sentences = [
        "The birch canoe slid on the smooth planks.",
        "Glue the sheet to the dark blue background.",
        "It is easy to tell the depth of a well.",
        "These days a chicken leg is a rare dish.",
        "Rice is often served in round bowls.",
        "The juice of lemons makes fine punch.",
    ]
    rng = np.random.default_rng(0)
    parts, gaps, at = [], [], 0
    for text in sentences:
        speech = spoken(text, tmp_path)
        gap = (0.002 * rng.standard_normal(int(0.6 * RATE))).astype(np.float32)
        parts += [speech, gap]
        gaps.append((at + speech.shape[0], at + speech.shape[0] + gap.shape[0]))
        at += speech.shape[0] + gap.shape[0]
    audio = np.concatenate(parts)  # about 20 s
    spans = cut_pieces(audio, RATE, 12.0, at_pauses=True)
    assert len(spans) >= 3 and spans[0][0] == 0 and spans[-1][1] == audio.shape[0]
    for start, end in spans[:-1]:
        assert any(a <= end <= b for a, b in gaps), end / RATE  # every cut between two sentences
        assert end - start >= MIN_PIECE_S * RATE


def test_recordings_no_longer_than_a_piece_skip_the_vad(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(audio: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        raise AssertionError("the VAD ran")

    monkeypatch.setattr(segment.vad, "recording_speech", never)
    audio = speech_like(20.0, np.random.default_rng(5))  # what needs no cut is not searched for pauses
    assert cut_pieces(audio, RATE, 20.0, at_pauses=True) == [(0, audio.shape[0])]


def test_a_whole_recording_is_scored_as_one_call_would() -> None:
    rng = np.random.default_rng(6)
    audio = np.concatenate([speech_like(3.0, rng) for _ in range(15)])  # more than one block of the input
    assert audio.shape[0] > vad.BLOCK_FRAMES * vad.FRAME
    expected, _ = vad.speech_frames(vad.SileroVad().probabilities(audio), 0.5)
    speech = vad.recording_speech(audio)
    assert speech.dtype == bool and speech.shape == (audio.shape[0] // vad.FRAME,)
    assert np.array_equal(speech, expected) and 0 < speech.sum() < speech.shape[0]
