"""CTC prefix scores of transcript prefixes, for the second pass's joint decoding
(``app.asr.whisper.joint``): the probability, summed over every alignment of an utterance's CTC
frames, that its transcript begins with a given text (Watanabe et al., 2017), and the CTC head's
spelling of decoder tokens and of numbers written in digits.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.asr.text import spoken_form

_SPELLED_OUT = frozenset("0123456789$£€%&@#+=")
"""Characters a speaker says as words: a token with one has no spelling of its own."""

NUMBER_CHARS = frozenset("0123456789,.-:/%$£€ ")
"""What numbers are written with: a run of tokens of these is spelled as a speaker says it."""


def token_spellings(texts: Sequence[str], ctc_tokens: Sequence[str], word_delimiter: str) -> list[str | None]:
    """Each token text as the CTC head's characters (lower case, accents dropped; punctuation and
    spaces become one delimiter), or None when the CTC head cannot score it (digits, symbols,
    letters outside its vocabulary)."""
    vocabulary = set(ctc_tokens)
    spellings: list[str | None] = []
    for text in texts:
        chars: list[str] = []
        scorable = True
        folded = unicodedata.normalize("NFKD", text.lower().replace("’", "'"))
        for c in (c for c in folded if not unicodedata.combining(c)):
            if c in vocabulary and c != word_delimiter:
                chars.append(c)
            elif c in _SPELLED_OUT or c.isalnum() or c == "\ufffd":
                scorable = False
                break
            elif not chars or chars[-1] != word_delimiter:
                chars.append(word_delimiter)
        spellings.append("".join(chars) if scorable else None)
    return spellings


@dataclass
class Prefix:
    """The CTC state of one transcript prefix: log-probabilities that frames ``0..t`` emit it
    ending in its last character (``ends_char``) or in blank (``ends_blank``), its prefix score,
    its characters, and whether a word delimiter waits for the next letter."""

    ends_char: np.ndarray  # (frames,) float64
    ends_blank: np.ndarray
    score: float
    chars: tuple[int, ...]
    pending_space: bool = False

    @property
    def end_score(self) -> float:
        """Log-probability of the whole utterance being exactly this prefix."""
        return float(np.logaddexp(self.ends_char[-1], self.ends_blank[-1]))


class CtcPrefixScorer:
    """Prefix scores of one utterance's CTC log-probs (frames, vocab), character by character.

    Each extension is a linear recurrence over frames, solved for all frames at once with
    cumulative sums in log space, so a step costs a few vector operations per character. A prefix's
    state depends only on its characters, so extensions are remembered until :meth:`forget`: the
    candidates of one decoding step share their first characters (" the", " they", " then") and
    beams often reach the same text by different tokens (about 45 % of the extensions of a 10 s
    clip's beam search are repeats).
    """

    def __init__(self, log_probs: np.ndarray, blank_id: int, char_ids: dict[str, int], delimiter: str) -> None:
        self.log_probs = np.ascontiguousarray(np.asarray(log_probs, dtype=np.float64).T)  # (vocab, frames)
        self.blank_id = blank_id
        self.char_ids = char_ids
        self.delimiter = delimiter
        # each token's log-probs summed over frames 0..t, and over frames before t: every
        # extension by that token reads them
        self.sums = np.cumsum(self.log_probs, axis=1)
        self.shifted = np.concatenate([np.zeros((self.sums.shape[0], 1)), self.sums[:, :-1]], axis=1)
        self.blank_sums = self.sums[blank_id]
        self._known: dict[tuple[tuple[int, ...], int], Prefix] = {}

    def forget(self) -> None:
        """Drop the remembered extensions (their memory: two float64 arrays of the utterance's
        frames each); the joint search calls it once per decoding step."""
        self._known.clear()

    def empty(self) -> Prefix:
        frames = self.log_probs.shape[1]
        return Prefix(np.full(frames, -np.inf), self.blank_sums.copy(), 0.0, ())

    def extend(self, prefix: Prefix, spelling: str) -> Prefix:
        """``prefix`` followed by ``spelling`` (a delimiter only separates words: it is emitted
        before the next letter, never at the start or the end)."""
        for c in spelling:
            if c == self.delimiter:
                prefix = Prefix(prefix.ends_char, prefix.ends_blank, prefix.score, prefix.chars, bool(prefix.chars))
                continue
            if prefix.pending_space:
                prefix = self._add(prefix, self.char_ids[self.delimiter])
            prefix = self._add(prefix, self.char_ids[c])
        return prefix

    def _add(self, prefix: Prefix, char: int) -> Prefix:
        key = (prefix.chars, char)
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = self._compute(prefix, char)
        return known

    def _compute(self, prefix: Prefix, char: int) -> Prefix:
        emits = self.log_probs[char]
        # paths that may emit ``char`` at frame t: the prefix done by t-1 (only ending in blank
        # when ``char`` repeats its last character); before frame 0 only the empty prefix is done
        done = (
            prefix.ends_blank
            if prefix.chars and prefix.chars[-1] == char
            else np.logaddexp(prefix.ends_char, prefix.ends_blank)
        )
        before = np.concatenate(([0.0 if not prefix.chars else -np.inf], done[:-1]))
        ends_char = self.sums[char] + np.logaddexp.accumulate(before - self.shifted[char])
        score = _log_sum_exp(before + emits)
        blank_before = np.concatenate(([-np.inf], ends_char[:-1]))
        ends_blank = self.blank_sums + np.logaddexp.accumulate(blank_before - self.shifted[self.blank_id])
        return Prefix(ends_char, ends_blank, score, (*prefix.chars, char))


def _log_sum_exp(values: np.ndarray) -> float:
    top = float(values.max())
    return top if top == -np.inf else top + float(np.log(np.exp(values - top).sum()))


def number_texts(texts: Sequence[str]) -> list[str | None]:
    """Each token text that can be part of a number written in digits ("1", " 253", ",", "%"), else None."""
    return [text if text and set(text) <= NUMBER_CHARS else None for text in texts]


def starts_number(text: str) -> bool:
    """Whether a number token can begin a number (it has a digit or a currency sign)."""
    return any(c.isdigit() or c in "$£€" for c in text)


def spell_number(text: str, ctc_tokens: Sequence[str], word_delimiter: str) -> str:
    """A run of number tokens as the CTC head's characters: its spoken form ("253" is "two hundred
    and fifty three", "825-4664" is read digit by digit), after a delimiter."""
    spelled = token_spellings([" " + spoken_form(text)], ctc_tokens, word_delimiter)[0]
    return spelled or word_delimiter
