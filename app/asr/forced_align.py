"""CTC forced alignment in NumPy: the best frame path that spells a given token sequence.

The same Viterbi search as ``torchaudio.functional.forced_align`` (batch of one), ties broken
the same way, so both give the same path: states are the targets with a blank before, between
and after them (2L + 1), a frame may stay on its state, step to the next, or skip a blank
between two different tokens, and only states that can still be reached from the first frame
and can still reach the last one are scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class NoAlignment(ValueError):
    """No path spells the targets: too few frames, or log-probabilities that rule out every path."""


def forced_align(
    log_probs: np.ndarray, targets: Sequence[int] | np.ndarray, blank: int
) -> tuple[np.ndarray, np.ndarray]:
    """The most likely frame path spelling ``targets``, and each frame's log-probability on it.

    Args:
        log_probs: (frames, vocab) CTC log-probabilities of one utterance.
        targets: (L,) token ids to align, none of them ``blank``.
        blank: the blank token's id.

    Returns:
        (frames,) int64 token id of each frame (``blank`` between tokens) and (frames,) the
        log-probability of that token at that frame, in ``log_probs``' float type.

    Raises:
        NoAlignment: fewer frames than targets plus repeated neighbours (each repeat needs a
            blank between), or log-probabilities that rule out every path.
        ValueError: bad shapes or ids.
    """
    log_probs = _checked_log_probs(log_probs)
    labels = _checked_targets(targets, blank, log_probs.shape[1])
    frames, count = log_probs.shape[0], labels.size
    repeats = int(np.count_nonzero(labels[1:] == labels[:-1]))
    if frames < count + repeats:
        raise NoAlignment(
            f"{frames} frames cannot hold {count} targets with {repeats} repeats (needs {count + repeats})"
        )
    states = np.full(2 * count + 1, blank, dtype=np.int64)
    states[1::2] = labels
    pointers, last = _viterbi(log_probs[:, states], labels, repeats)
    path = states[_backtrack(pointers, last)]
    return path, log_probs[np.arange(frames), path]


def _checked_log_probs(log_probs: np.ndarray) -> np.ndarray:
    """``log_probs`` as a float32 (or float64, when given so) (frames, vocab) array."""
    array = np.asarray(log_probs)
    if array.ndim != 2:
        raise ValueError(f"log_probs must be (frames, vocab), got shape {array.shape}")
    dtype = np.float64 if array.dtype == np.float64 else np.float32
    return np.ascontiguousarray(array, dtype=dtype)


def _checked_targets(targets: Sequence[int] | np.ndarray, blank: int, vocab: int) -> np.ndarray:
    """``targets`` as a (L,) int64 array of ids in the vocabulary, without the blank."""
    labels = np.asarray(targets, dtype=np.int64).reshape(-1)
    if labels.size == 0:
        raise ValueError("targets must not be empty")
    if not 0 <= blank < vocab:
        raise ValueError(f"blank must be within [0, {vocab}), got {blank}")
    if np.any(labels == blank):
        raise ValueError(f"targets must not contain the blank id {blank}")
    if labels.min() < 0 or labels.max() >= vocab:
        raise ValueError(f"target ids must be within [0, {vocab})")
    return labels


def _viterbi(emissions: np.ndarray, labels: np.ndarray, repeats: int) -> tuple[np.ndarray, int]:
    """(frames, states) int8 back-pointers of the best path into each scored state (0 stay,
    1 step, 2 skip a blank) from (frames, states) emission log-probs, and the better of the two
    final states (the last target, or the blank after it).

    Of equal predecessors, staying wins over stepping and stepping over skipping, except that a
    step tied with a skip both lose to staying, as torchaudio's comparisons decide.
    """
    frames, size = emissions.shape
    dtype = emissions.dtype.type
    skip_penalty = np.full(size, -np.inf, dtype=dtype)  # 0 where a state may be entered by a skip
    skip_penalty[3::2] = np.where(labels[1:] != labels[:-1], 0.0, -np.inf)
    takes_skip = np.zeros((frames, size), dtype=bool)
    takes_step = np.zeros((frames, size), dtype=bool)
    previous = np.full(size + 2, -np.inf, dtype=dtype)  # two unreachable states before state 0
    current = previous.copy()
    windows = _scored_states(frames, labels.tolist(), labels.size + repeats)
    start, end = windows[0]
    previous[2 + start : 2 + end] = emissions[0, start:end]
    for t in range(1, frames):
        start, end = windows[t]
        stay = previous[2 + start : 2 + end]
        step = previous[1 + start : 1 + end]
        skip = previous[start:end] + skip_penalty[start:end]
        take_skip = np.greater(skip, np.maximum(stay, step), out=takes_skip[t, start:end])
        take_step = np.greater(step, np.maximum(stay, skip), out=takes_step[t, start:end])
        best = np.where(take_skip, skip, np.where(take_step, step, stay))
        current[: 2 + start] = -np.inf
        np.add(best, emissions[t, start:end], out=current[2 + start : 2 + end])
        previous, current = current, previous
    final = previous[2:]
    if not (np.isfinite(final[-1]) or np.isfinite(final[-2])):
        raise NoAlignment("the log-probabilities rule out every path that spells the targets")
    pointers = takes_skip.view(np.int8) * 2 + takes_step.view(np.int8)
    return pointers, size - 1 if final[-1] > final[-2] else size - 2


def _scored_states(frames: int, labels: list[int], need: int) -> list[tuple[int, int]]:
    """Per frame, the states scored as [start, end): from the first that can still reach the
    end in the frames left to one past the last that the first frame can have reached, with
    ``need`` (targets plus repeats) the fewest frames that hold the targets."""
    start = 0 if frames > need else 1
    end = 2  # the first blank and the first target
    windows = [(start, end)]
    for t in range(1, frames):
        if frames - t <= need:
            if start % 2 == 1 and labels[start // 2] != labels[start // 2 + 1]:
                start += 1
            start += 1
        if t <= need:
            if end % 2 == 0 and end < 2 * len(labels) and labels[end // 2 - 1] != labels[end // 2]:
                end += 1
            end += 1
        windows.append((start, end))
    return windows


def _backtrack(pointers: np.ndarray, last: int) -> np.ndarray:
    """(frames,) state of each frame on the best path, followed back from state ``last``."""
    frames, size = pointers.shape
    flat = pointers.ravel()
    path = np.empty(frames, dtype=np.int64)
    state = last
    for t in range(frames - 1, -1, -1):
        path[t] = state
        state -= flat.item(t * size + state)
    return path
