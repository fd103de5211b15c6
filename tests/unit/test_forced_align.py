"""CTC forced alignment in NumPy gives torchaudio's path and scores: on random log-probs (ties,
repeated targets, no spare frames) and on the shipped model's log-probs of real speech."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torchaudio.functional

from app.asr.bundle import load_bundle
from app.asr.ctc import spell, spelling_index
from app.asr.forced_align import NoAlignment, forced_align
from app.asr.text import spoken_form
from tests.support import cv100_clips

SCORE_TOLERANCE = 1e-5


def torchaudio_align(log_probs: np.ndarray, targets: list[int], blank: int) -> tuple[np.ndarray, np.ndarray]:
    path, scores = torchaudio.functional.forced_align(
        torch.from_numpy(log_probs)[None], torch.tensor([targets], dtype=torch.int32), blank=blank
    )
    return path[0].numpy(), scores[0].numpy()


def assert_same_alignment(log_probs: np.ndarray, targets: list[int], blank: int) -> None:
    path, scores = forced_align(log_probs, targets, blank)
    reference_path, reference_scores = torchaudio_align(log_probs, targets, blank)
    np.testing.assert_array_equal(path, reference_path)
    np.testing.assert_allclose(scores, reference_scores, rtol=0, atol=SCORE_TOLERANCE)
    assert scores.dtype == np.float32 and path.dtype == np.int64


def random_case(
    rng: np.random.Generator, vocab: int, count: int, spare: int, alphabet: int, rounded: bool
) -> tuple[np.ndarray, list[int]]:
    """(frames, vocab) log-probs and ``count`` targets drawn from ids 1..alphabet-1 (a small
    alphabet repeats neighbours), with ``spare`` frames beyond the fewest that hold them; rounded
    logits make exact ties between paths."""
    targets = rng.integers(1, alphabet, size=count).tolist()
    repeats = sum(a == b for a, b in itertools.pairwise(targets))
    logits = rng.standard_normal((count + repeats + spare, vocab)).astype(np.float32) * 3
    if rounded:
        logits = np.round(logits)
    return torch.log_softmax(torch.from_numpy(logits), -1).numpy(), targets


@pytest.mark.parametrize(
    ("vocab", "count", "spare", "alphabet"),
    [(5, 1, 0, 5), (5, 1, 7, 5), (8, 6, 0, 3), (8, 6, 1, 3), (29, 40, 60, 29), (29, 40, 5, 4), (40, 100, 400, 40)],
)
@pytest.mark.parametrize("rounded", [False, True])
def test_random_log_probs_align_as_torchaudio(vocab: int, count: int, spare: int, alphabet: int, rounded: bool) -> None:
    rng = np.random.default_rng(vocab * 1000 + count * 10 + spare + rounded)
    for _ in range(10):
        log_probs, targets = random_case(rng, vocab, count, spare, alphabet, rounded)
        assert_same_alignment(log_probs, targets, blank=0)


def test_blank_need_not_be_zero() -> None:
    rng = np.random.default_rng(7)
    log_probs, targets = random_case(rng, 10, 12, 8, 9, rounded=False)  # ids 1..8; blank 9
    assert_same_alignment(log_probs, targets, blank=9)
    path, _ = forced_align(log_probs, np.array(targets), 9)
    assert [t for t in path.tolist() if t != 9][:1] == targets[:1]


def test_the_shipped_model_on_real_speech_aligns_as_torchaudio() -> None:
    bundle = load_bundle("models/en-whisper-tiny")
    index, longest = spelling_index(bundle.config.tokens)
    delimiter = bundle.config.tokens.index(bundle.config.word_delimiter)
    for audio, text in cv100_clips(3):
        with torch.inference_mode():
            features, lengths = bundle.frontend(torch.from_numpy(audio)[None], torch.tensor([audio.size]))
            log_probs, _ = bundle.model(features, lengths)
        targets: list[int] = []
        for word in spoken_form(text).split():
            ids = spell(word, index, longest) or []
            targets += [delimiter, *ids] if targets and ids else ids
        assert len(targets) > 10
        assert_same_alignment(log_probs[0].numpy(), targets, bundle.config.blank_id)


def test_too_few_frames_and_impossible_paths_raise_no_alignment() -> None:
    log_probs = np.log(np.full((5, 4), 0.25, np.float32))
    forced_align(log_probs, [1, 1, 2, 3], 0)  # 4 targets and a repeat need 5 frames
    with pytest.raises(NoAlignment, match="5 frames cannot hold 5 targets with 1 repeats"):
        forced_align(log_probs, [1, 1, 2, 3, 1], 0)
    with pytest.raises(RuntimeError, match="targets length is too long"):  # torchaudio refuses it too
        torchaudio_align(log_probs, [1, 1, 2, 3, 1], 0)
    with pytest.raises(NoAlignment):
        forced_align(log_probs[:0], [1], 0)
    ruled_out = log_probs.copy()
    ruled_out[:, 2] = -np.inf  # target 2 can be on no frame
    with pytest.raises(NoAlignment, match="rule out every path"):
        forced_align(ruled_out, [1, 2], 0)


def test_bad_arguments_raise_value_error() -> None:
    log_probs = np.log(np.full((6, 4), 0.25, np.float32))
    for targets, blank, message in [
        ([1, 0], 0, "blank"),
        ([1, 4], 0, "within"),
        ([], 0, "empty"),
        ([1], 4, "blank must be within"),
    ]:
        with pytest.raises(ValueError, match=message):
            forced_align(log_probs, targets, blank)
    with pytest.raises(ValueError, match="frames, vocab"):
        forced_align(log_probs[None], [1], 0)
