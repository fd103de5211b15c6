"""Greedy decoding's bookkeeping for Whisper's decoder, shared by the PyTorch decoder
(``app.asr.whisper.decoder``) and the one without PyTorch (``app.asr.slim.second_pass``): the
30-second window, each row's cap on new tokens, and rows that stop at end-of-text or at their cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class TopTokens:
    """What a search reads of one decoder step: each sequence's ``k`` likeliest tokens, best first
    (``tokens`` (sequences, k)), their log-probabilities (``log_probs`` (sequences, k)), and the
    log-probability of end-of-text (``end`` (sequences,)), after the suppressed tokens are left
    out. The ONNX decoder step computes them in its graph (``app.asr.slim.graphs.decoder_step``),
    so the step's (sequences, vocab) logits never leave ONNX Runtime; :meth:`of` computes them from
    logits. A sequence whose every token is suppressed has no finite log-probability."""

    tokens: np.ndarray
    log_probs: np.ndarray
    end: np.ndarray

    @classmethod
    def of(cls, logits: np.ndarray, k: int, end_of_text: int) -> TopTokens:
        """From (sequences, vocab) ``logits``, suppressed ones -inf."""
        with np.errstate(invalid="ignore"):  # a row all -inf gives NaN, as the graph's does
            top = logits.max(axis=-1, keepdims=True)
            log_probs = logits - (top + np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)))
        k = min(k, logits.shape[-1])
        tokens = np.argpartition(-log_probs, k - 1, axis=-1)[:, :k]
        values = np.take_along_axis(log_probs, tokens, axis=-1)
        order = np.lexsort((tokens, -values), axis=-1)  # ties: the lower token first, as ONNX's TopK
        tokens, values = np.take_along_axis(tokens, order, axis=-1), np.take_along_axis(values, order, axis=-1)
        return cls(tokens, values, log_probs[:, end_of_text])


class TokenSearch(Protocol):
    """How a decoder loop is driven: the rows still ``running`` each run ``beams`` sequences side
    by side (row ``running[i]``'s at ``i * beams + k``), one ``advance`` per step until
    ``finished``; ``best`` gives each row's text tokens. A row that is done leaves the decoder's
    batch (``running`` shrinks as :func:`shrink` orders it), so a batch costs what its rows cost,
    not its longest row times its size. Greedy decoding (:class:`GreedyRows`) and the joint
    CTC/attention beam search (``app.asr.whisper.joint``)."""

    step: int
    beams: int
    candidates: int  # the likeliest tokens per sequence it reads each step (``TopTokens``' k)
    running: list[int]  # the rows not done, whose sequences the decoder runs this step, in order

    @property
    def sequences(self) -> int:
        """Sequences the decoder runs this step: ``beams`` per running row."""
        ...

    @property
    def finished(self) -> bool: ...

    def advance(self, top: TopTokens) -> tuple[np.ndarray, np.ndarray]:
        """Given this step's likeliest tokens: for each sequence of the next step (the rows then
        running), the sequence of this step it continues and its next input token."""
        ...

    def best(self) -> list[list[int]]: ...


class GreedyRows:
    """The rows of one batched greedy decode: each row's tokens so far (prompt and end-of-text left
    out), done at end-of-text or at its cap; rows decode side by side until all are done."""

    beams = 1
    candidates = 1

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

    def advance(self, top: TopTokens) -> tuple[np.ndarray, np.ndarray]:
        """Each running row's likeliest token, taken (:class:`TokenSearch`)."""
        chosen = top.tokens[:, 0]
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
