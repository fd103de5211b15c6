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


def shrink(running: Sequence[int], done: Sequence[bool]) -> list[int]:
    """The rows of ``running`` not ``done``, in the order a decoder's batch keeps them: each stays
    in its place if that place is still in the batch, and rows from the places cut off fill the
    places freed. So a decoder shrinks its batch by copying only the rows that move
    (:func:`moves`), each into a place that no row still going reads."""
    going = [row for row in running if not done[row]]
    kept: list[int | None] = [row if not done[row] else None for row in running[: len(going)]]
    movers = iter(row for row in running[len(going) :] if not done[row])
    return [row if row is not None else next(movers) for row in kept]


def moves(before: Sequence[int], after: Sequence[int]) -> list[tuple[int, int]]:
    """For a batch shrunk from rows ``before`` to ``after`` (:func:`shrink`): (place, place it
    comes from) of each row that moves."""
    places = {row: place for place, row in enumerate(before)}
    return [(place, places[row]) for place, row in enumerate(after) if places[row] != place]


class TokenSearch(Protocol):
    """How a decoder loop is driven: the rows still ``running`` each run ``beams`` sequences side
    by side (row ``running[i]``'s at ``i * beams + k``), one ``advance`` per step until
    ``finished``; ``best`` gives each row's text tokens. A row that is done leaves the decoder's
    batch (``running`` shrinks as :func:`shrink` orders it), so a batch costs what its rows cost,
    not its longest row times its size. Greedy decoding (:class:`GreedyRows`) and the joint
    CTC/attention beam search (``app.asr.whisper.joint``)."""

    step: int
    beams: int
    running: list[int]  # the rows not done, whose sequences the decoder runs this step, in order

    @property
    def sequences(self) -> int:
        """Sequences the decoder runs this step: ``beams`` per running row."""
        ...

    @property
    def finished(self) -> bool: ...

    def advance(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Given this step's (sequences, vocab) logits (suppressed ones -inf): for each sequence of
        the next step (the rows then running), the sequence of this step it continues and its next
        input token."""
        ...

    def best(self) -> list[list[int]]: ...


class GreedyRows:
    """The rows of one batched greedy decode: each row's tokens so far (prompt and end-of-text left
    out), done at end-of-text or at its cap; rows decode side by side until all are done."""

    beams = 1

    def __init__(self, rules: DecodingRules, batch: int, max_new: Sequence[int] | None = None) -> None:
        limit = rules.max_tokens - len(rules.prompt)
        self.caps = [min(limit, m) for m in max_new] if max_new is not None else [limit] * batch
        self.end_of_text = rules.end_of_text
        self.tokens: list[list[int]] = [[] for _ in self.caps]
        self.done = [cap <= 0 for cap in self.caps]
        self.step = 0  # steps taken; step 0 also suppresses ``rules.suppress_first``
        self.running = shrink(range(len(self.caps)), self.done)

    @property
    def sequences(self) -> int:
        return len(self.running)

    @property
    def finished(self) -> bool:
        return all(self.done)

    def advance(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each running row's likeliest token, taken (:class:`TokenSearch`)."""
        chosen = logits.argmax(axis=-1)
        running = self.running
        for row, token in zip(running, chosen.tolist(), strict=True):
            if token == self.end_of_text:
                self.done[row] = True
            else:
                self.tokens[row].append(token)
                self.done[row] = len(self.tokens[row]) >= self.caps[row]
        self.step += 1
        self.running = shrink(running, self.done)
        places = {row: place for place, row in enumerate(running)}
        parents = np.array([places[row] for row in self.running], dtype=np.int64)
        return parents, chosen[parents].astype(np.int64)

    def best(self) -> list[list[int]]:
        return self.tokens
