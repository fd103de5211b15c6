"""Greedy decoding's bookkeeping for Whisper's decoder, shared by the PyTorch decoder
(``app.asr.whisper.decoder``) and the one without PyTorch (``app.asr.slim.second_pass``): the
30-second window, each row's cap on new tokens, and rows that stop at end-of-text or at their cap.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    def finished(self) -> bool:
        return all(self.done)

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
