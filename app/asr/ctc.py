"""CTC greedy decoding with word timings and confidences."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # training passes tensors; the server's path needs no PyTorch
    from torch import Tensor


@dataclass
class Word:
    """A recognised word with its time span in seconds and a confidence in [0, 1]."""

    word: str
    start: float
    end: float
    confidence: float


@dataclass
class Alternative:
    """One of the N best transcripts of a beam search, with its total log-score (higher is better)."""

    text: str
    score: float


@dataclass
class Hypothesis:
    """One utterance's decoding: text, emitted token ids, their frames, and words.

    Beam search also sets ``score`` (the best path's total log-score) and ``alternatives``
    (the N best transcripts, best first; empty unless asked for).
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    token_frames: list[int] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    score: float | None = None
    alternatives: list[Alternative] = field(default_factory=list)


def greedy_decode(
    log_probs: Tensor,
    lengths: Tensor,
    tokens: list[str],
    blank_id: int,
    frame_seconds: float,
    word_delimiter: str = " ",
    time_offset: float = 0.0,
) -> list[Hypothesis]:
    """Best-path CTC decoding of a batch.

    Args:
        log_probs: (batch, frames, vocab) log-probabilities.
        lengths: (batch,) valid frames per row.
        tokens: id -> token string; ``word_delimiter`` separates words.
        blank_id: the CTC blank's id.
        frame_seconds: seconds per output frame, for word times.
        time_offset: seconds added to every time (for chunks of a longer recording).

    Returns:
        One :class:`Hypothesis` per row. A word's start is its first token's first frame, its
        end the frame after its last token's last frame; its confidence is the mean of its
        tokens' best-path probabilities.
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (batch, frames, vocab), got {tuple(log_probs.shape)}")
    if log_probs.shape[-1] != len(tokens):
        raise ValueError(f"log_probs has {log_probs.shape[-1]} classes but there are {len(tokens)} tokens")
    best_logp, best = log_probs.float().max(dim=-1)
    best_prob = best_logp.exp()
    delimiter_id = tokens.index(word_delimiter)
    results = []
    for row in range(best.shape[0]):
        n = int(lengths[row])
        results.append(
            decode_path(
                best[row, :n].tolist(),
                best_prob[row, :n].tolist(),
                tokens,
                blank_id,
                delimiter_id,
                frame_seconds,
                time_offset,
            )
        )
    return results


def decode_path(
    path: list[int],
    probs: list[float],
    tokens: list[str],
    blank_id: int,
    delimiter_id: int,
    frame_seconds: float,
    time_offset: float = 0.0,
) -> Hypothesis:
    """A hypothesis from one frame-level token path (a greedy or a beam search's best path).

    ``path`` holds a token id per frame, ``probs`` that token's probability at that frame; words
    get times and confidences as in :func:`greedy_decode`.
    """
    hyp = Hypothesis(text="")
    # Collapse the best path into emitted tokens: (id, first frame, last frame, probability).
    spans: list[list[float]] = []
    previous = -1
    for frame, (token, prob) in enumerate(zip(path, probs, strict=True)):
        if token != previous and token != blank_id:
            spans.append([token, frame, frame, prob])
        elif token == previous and token != blank_id:
            spans[-1][2] = frame
            spans[-1][3] = max(spans[-1][3], prob)
        previous = token
    current: list[list[float]] = []
    for span in [*spans, [delimiter_id, len(path), len(path), 1.0]]:
        token = int(span[0])
        if token == delimiter_id:
            if current:
                hyp.words.append(_word(current, tokens, frame_seconds, time_offset))
                current = []
        else:
            current.append(span)
            hyp.token_ids.append(token)
            hyp.token_frames.append(int(span[1]))
    hyp.text = " ".join(w.word for w in hyp.words)
    return hyp


def _word(spans: list[list[float]], tokens: list[str], frame_seconds: float, offset: float) -> Word:
    text = "".join(tokens[int(s[0])] for s in spans)
    start = offset + spans[0][1] * frame_seconds
    end = offset + (spans[-1][2] + 1) * frame_seconds
    confidence = sum(s[3] for s in spans) / len(spans)
    return Word(word=text, start=round(start, 3), end=round(end, 3), confidence=round(confidence, 4))


def ctc_collapse(ids: list[int], blank_id: int) -> list[int]:
    """Merge repeats and drop blanks from a frame-level id path."""
    out = []
    previous = -1
    for token in ids:
        if token != previous and token != blank_id:
            out.append(token)
        previous = token
    return out


def spelling_index(tokens: list[str]) -> tuple[dict[str, int], int]:
    """The tokens that spell words (not ``<blank>``-style markers or whitespace) by string, and
    the longest one's length: the arguments of :func:`spell`."""
    index = {t: i for i, t in enumerate(tokens) if t.strip() and not (t.startswith("<") and t.endswith(">"))}
    return index, max((len(t) for t in index), default=1)


def spell(word: str, index: dict[str, int], longest: int) -> list[int] | None:
    """Token ids of ``word``: the longest token that matches at each position, left to right.

    ``index`` maps token strings to ids and ``longest`` is the longest token's length. With a
    character vocabulary this is one id per character; with word pieces (multi-character tokens
    learned from text, see ``train.data.wordpieces``) it is the greedy segmentation WordPiece
    uses. None if some character is not a token.
    """
    ids = []
    start = 0
    while start < len(word):
        for end in range(min(len(word), start + longest), start, -1):
            token = index.get(word[start:end])
            if token is not None:
                ids.append(token)
                start = end
                break
        else:
            return None
    return ids


def text_to_ids(text: str, tokens: list[str], word_delimiter: str = " ") -> list[int]:
    """Map normalised text to token ids (:func:`spell` per word, the delimiter between words).

    Raises ValueError on a character outside the vocabulary.
    """
    index, longest = spelling_index(tokens)
    delimiter = tokens.index(word_delimiter)
    ids: list[int] = []
    for n, word in enumerate(text.split(word_delimiter)):
        spelled = spell(word, index, longest)
        if spelled is None:
            bad = next(ch for ch in word if ch not in index)
            raise ValueError(f"character {bad!r} is not in the vocabulary")
        ids += [delimiter, *spelled] if n else spelled
    return ids


class GreedyDecoder:
    """Best-path decoding of one utterance's log-probabilities, configured for a vocabulary."""

    def __init__(self, tokens: list[str], blank_id: int, frame_seconds: float, word_delimiter: str = " ") -> None:
        self.tokens = tokens
        self.blank_id = blank_id
        self.frame_seconds = frame_seconds
        self.delimiter_id = tokens.index(word_delimiter)

    def decode(self, log_probs: np.ndarray, time_offset: float = 0.0) -> Hypothesis:
        """log_probs: (frames, vocab) for one utterance (no padding)."""
        if log_probs.ndim != 2 or log_probs.shape[1] != len(self.tokens):
            raise ValueError(f"log_probs must be (frames, {len(self.tokens)}), got {log_probs.shape}")
        best = log_probs.argmax(axis=1)
        probs = np.exp(log_probs[np.arange(best.shape[0]), best])
        return decode_path(
            best.tolist(),
            probs.tolist(),
            self.tokens,
            self.blank_id,
            self.delimiter_id,
            self.frame_seconds,
            time_offset,
        )
