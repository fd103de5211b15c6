"""Greedy decoding's bookkeeping for Whisper's decoder, shared by the PyTorch decoder
(``app.asr.whisper.decoder``) and the one without PyTorch (``app.asr.slim.second_pass``): the
30-second window, each row's cap on new tokens, and rows that stop at end-of-text or at their cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from app.asr.whisper.tokenizer import DecodingRules

WINDOW_FRAMES = 3000
"""The second pass's window: 30 s of log-mel frames, zero-padded (the decoder was trained only on such windows)."""

FRAME_SECONDS = 0.01
"""One log-mel frame."""

TOKENS_PER_SECOND = 12.0
"""Cap on output length per second of audio: a runaway loop stops there."""


def token_caps(frame_lengths: Sequence[int]) -> list[int]:
    """New tokens allowed per row of ``frame_lengths`` log-mel frames: 8, plus 12 per second."""
    return [8 + int(TOKENS_PER_SECOND * n * FRAME_SECONDS) for n in frame_lengths]


class TokenSearch(Protocol):
    """How a decoder loop is driven: ``sequences`` run side by side, one ``advance`` per step
    until ``finished``; ``best`` gives each row's text tokens. Greedy decoding
    (:class:`GreedyRows`) and the joint CTC/attention beam search (``app.asr.whisper.joint``)."""

    step: int

    @property
    def sequences(self) -> int: ...

    @property
    def finished(self) -> bool: ...

    def advance(self, logits: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Given this step's (sequences, vocab) logits (suppressed ones -inf): the sequence of this
        step each next one continues (None: each its own) and their next input tokens."""
        ...

    def best(self) -> list[list[int]]: ...


class GreedyRows:
    """The rows of one batched greedy decode: each row's tokens so far (prompt and end-of-text left
    out), done at end-of-text or at its cap; rows decode side by side until all are done."""

    def __init__(self, rules: DecodingRules, batch: int, max_new: Sequence[int] | None = None) -> None:
        limit = rules.max_tokens - len(rules.prompt)
        self.caps = [min(limit, m) for m in max_new] if max_new is not None else [limit] * batch
        self.end_of_text = rules.end_of_text
        self.tokens: list[list[int]] = [[] for _ in self.caps]
        self.done = [cap <= 0 for cap in self.caps]
        self.step = 0  # steps taken; step 0 also suppresses ``rules.suppress_first``

    @property
    def sequences(self) -> int:
        return len(self.caps)

    @property
    def finished(self) -> bool:
        return all(self.done)

    def advance(self, logits: np.ndarray) -> tuple[None, np.ndarray]:
        """Each row's likeliest token, taken (:class:`TokenSearch`)."""
        chosen = logits.argmax(axis=-1)
        self.take(chosen.tolist())
        return None, chosen.astype(np.int64)

    def best(self) -> list[list[int]]:
        return self.tokens

    def take(self, chosen: Sequence[int]) -> None:
        """Record this step's chosen token of every row (rows already done ignore theirs)."""
        for row, token in enumerate(chosen):
            if self.done[row]:
                continue
            if token == self.end_of_text:
                self.done[row] = True
            else:
                self.tokens[row].append(token)
                self.done[row] = len(self.tokens[row]) >= self.caps[row]
        self.step += 1
