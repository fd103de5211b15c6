"""Word times for text that did not come from the CTC path: CTC forced alignment on its frames.

The second pass (Whisper's decoder) writes text without frame times. Aligning that text,
spelled with the CTC model's tokens, against the same utterance's CTC log-probabilities gives
each word the frames the acoustic model places it on, so timestamps stay frame-accurate.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

from app.asr.ctc import Hypothesis, Word, spell, spelling_index
from app.asr.forced_align import NoAlignment, forced_align
from app.asr.text import spoken_form

logger = logging.getLogger(__name__)


@dataclass
class SecondPassOutput:
    """One utterance through the second pass: its CTC log-probs (frames, vocab) and Whisper's text."""

    log_probs: np.ndarray
    text: str


class AlignedDecoder:
    """Turns second-pass text into a hypothesis with word times and confidences from CTC frames.

    Text is put in the server's spoken form (lower case, numbers as words); words are aligned
    with ``app.asr.forced_align.forced_align``. A word's confidence is the mean probability of
    its characters on their aligned frames.
    """

    kind = "attention"

    def __init__(self, tokens: list[str], blank_id: int, frame_seconds: float, word_delimiter: str = " ") -> None:
        self.tokens = tokens
        self.blank_id = blank_id
        self.frame_seconds = frame_seconds
        self.delimiter_id = tokens.index(word_delimiter)
        self.index, self.longest = spelling_index(tokens)

    def align(self, output: SecondPassOutput, time_offset: float = 0.0) -> Hypothesis:
        """The hypothesis of ``output``; times in seconds from the recording's start."""
        words = [w for w in spoken_form(output.text).split() if spell(w, self.index, self.longest)]
        if not words:
            return Hypothesis(text="")
        spelled = [spell(w, self.index, self.longest) or [] for w in words]
        targets: list[int] = []
        for n, ids in enumerate(spelled):
            targets += [self.delimiter_id, *ids] if n else ids
        frames = self._frames(output.log_probs, targets)
        hyp = Hypothesis(text=" ".join(words))
        position = 0
        for n, (word, ids) in enumerate(zip(words, spelled, strict=True)):
            position += 1 if n else 0  # the delimiter before this word
            spans = frames[position : position + len(ids)]
            position += len(ids)
            hyp.token_ids += ids
            hyp.token_frames += [s[0] for s in spans]
            start, end = spans[0][0], spans[-1][1] + 1
            confidence = float(np.mean([s[2] for s in spans]))
            hyp.words.append(
                Word(
                    word=word,
                    start=round(time_offset + start * self.frame_seconds, 3),
                    end=round(time_offset + end * self.frame_seconds, 3),
                    confidence=round(confidence, 4),
                )
            )
        return hyp

    def _frames(self, log_probs: np.ndarray, targets: list[int]) -> list[tuple[int, int, float]]:
        """(first frame, last frame, probability) of each target token; evenly spread when no
        path can spell the text, as when the frames are too few for it (then with probability 0)."""
        frames = log_probs.shape[0]
        try:
            path, scores = forced_align(np.asarray(log_probs, dtype=np.float32), targets, self.blank_id)
        except NoAlignment as error:
            logger.warning("alignment of %d tokens on %d frames: %s; times spread evenly", len(targets), frames, error)
        else:
            return _spans(path.tolist(), np.exp(scores).tolist(), self.blank_id, len(targets))
        edges = np.linspace(0, max(frames, 1), len(targets) + 1)
        return [(int(a), max(int(a), int(b) - 1), 0.0) for a, b in itertools.pairwise(edges)]


def _spans(path: list[int], probs: list[float], blank_id: int, count: int) -> list[tuple[int, int, float]]:
    """Per target token of a forced-alignment frame path: first frame, last frame, best probability."""
    spans: list[tuple[int, int, float]] = []
    previous = blank_id
    for frame, (token, prob) in enumerate(zip(path, probs, strict=True)):
        if token != blank_id and token != previous:
            spans.append((frame, frame, prob))
        elif token != blank_id:
            first, _, best = spans[-1]
            spans[-1] = (first, frame, max(best, prob))
        previous = token
    if len(spans) != count:  # a repeated token with no blank between: the path cannot tell them apart
        raise RuntimeError(f"alignment gave {len(spans)} spans for {count} tokens")
    return spans
