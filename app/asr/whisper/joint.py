"""The second pass's joint CTC/attention beam search: each step, Whisper's decoder proposes its most
likely tokens for every hypothesis, and the CTC head's prefix score of each (the probability,
summed over every alignment of the CTC frames, that the transcript begins with the text so far;
``app.asr.whisper.ctc_prefix``) helps choose among them, as joint CTC/attention decoders do
(Watanabe et al., 2017, "Hybrid CTC/attention architecture for end-to-end speech recognition").
The CTC head spells what it hears frame by frame; the decoder knows English. Together they stop
the decoder's runaway loops and its misreadings of voices it never heard, and keep its spelling,
casing and punctuation.

A token's score is ``(1 - w) * log p_decoder + w * (log prefix(text + token) - log prefix(text))``;
end-of-text takes the CTC probability of the whole text instead of a prefix. Numbers the decoder
writes in digits are scored as they are said (``spoken_form``). Shared by the PyTorch decoder and
the one without PyTorch, so both choose the same tokens.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.asr.configs import BundleConfig, WhisperCTCConfig
from app.asr.whisper.ctc_prefix import (
    CtcPrefixScorer,
    Prefix,
    number_texts,
    spell_number,
    starts_number,
    token_spellings,
)
from app.asr.whisper.greedy import TopTokens, shrink
from app.asr.whisper.tokenizer import WhisperTokenizer

CANDIDATES = 8
"""Tokens per hypothesis and step that the search scores: the decoder's most likely ones."""

MAX_QUIET = 4
"""Tokens in a row that add no letter for CTC to score (punctuation, symbols): more would let the
decoder loop on them at no CTC cost (". . . .")."""


@dataclass
class Beam:
    """One hypothesis: its tokens (prompt and end-of-text left out), joint score and CTC prefix."""

    tokens: list[int]
    score: float
    prefix: Prefix
    quiet: int = 0  # tokens in a row that added no letter
    number: tuple[Prefix, str] | None = None  # in a number: the prefix before it, its text so far


@dataclass(frozen=True)
class Extension:
    """A hypothesis's CTC prefix after one more token, the CTC gain, and its number state."""

    prefix: Prefix
    gain: float
    number: tuple[Prefix, str] | None = None


@dataclass(frozen=True)
class TokenTable:
    """How the CTC head reads each decoder token: its spelling (None: none of its own) and, for
    tokens numbers are written with, its text."""

    spellings: Sequence[str | None]
    numbers: Sequence[str | None]
    ctc_tokens: Sequence[str]
    delimiter: str


class JointSearch:
    """Beam search over the decoder's tokens with CTC prefix scores, for a batch of rows.

    The decoder runs ``beams`` sequences per running row side by side (the ``i``-th running row's
    at ``i * beams + k``; a row that is done leaves). Each step takes every live beam's
    ``candidates`` most likely tokens, scores them ``beam + (1 - w) * log p_decoder + w * CTC
    gain``, and keeps the ``beams`` best that go on; end-of-text among them finishes a hypothesis
    (as Whisper's beam search does). A row is done when it has ``beams`` finished hypotheses and
    none still going scores better, or when its beams reach its token cap. Its transcript is the
    best of its finished hypotheses and of every live beam ended at every step (so a decoder that
    loops on loses to the text it had before). One beam is greedy decoding with the CTC head's help.
    """

    def __init__(
        self,
        table: TokenTable,
        scorers: Sequence[CtcPrefixScorer],
        end_of_text: int,
        weight: float,
        caps: Sequence[int],
        beams: int = 1,
        candidates: int = CANDIDATES,
    ) -> None:
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"the CTC weight must be at least 0 and below 1, got {weight}")
        if len(caps) != len(scorers):
            raise ValueError(f"one cap per row: {len(caps)} caps for {len(scorers)} rows")
        self.table = table
        self.scorers = scorers
        self.end_of_text = end_of_text
        self.weight = weight
        self.caps = list(caps)
        self.beams = beams
        self.candidates = max(candidates, beams + 1)
        # step 0: one live beam per row (the others would repeat it)
        self.live: list[list[Beam]] = [[Beam([], 0.0, scorer.empty())] for scorer in scorers]
        self.completed: list[list[Beam]] = [[] for _ in scorers]  # hypotheses ended by end-of-text or cap
        self.endings: list[list[Beam]] = [[] for _ in scorers]
        self.done = [cap <= 0 for cap in self.caps]
        self.running = shrink(range(len(scorers)), self.done)  # as TokenSearch orders them
        self.step = 0

    @property
    def sequences(self) -> int:
        """Sequences the decoder runs this step: ``beams`` per running row."""
        return len(self.running) * self.beams

    @property
    def finished(self) -> bool:
        return all(self.done)

    def advance(self, top: TopTokens) -> tuple[np.ndarray, np.ndarray]:
        """One step, given the likeliest tokens of the decoder's sequences of the running rows.

        Returns, for each sequence of the next step (the rows then running), the sequence of this
        step it continues (to reorder the decoder's caches) and its next input token.
        """
        kept: dict[int, tuple[int, list[tuple[int, Beam]]]] = {}  # row: its first sequence, beams kept
        tokens, log_probs, ends = top.tokens.tolist(), top.log_probs.tolist(), top.end.tolist()
        for i, row in enumerate(self.running):
            first = i * self.beams
            span = slice(first, first + self.beams)
            kept[row] = first, self._advance_row(row, tokens[span], log_probs[span], ends[span])
            self.scorers[row].forget()  # the kept beams hold their prefixes; the rest may go
        self.step += 1
        self.running = following = shrink(self.running, self.done)
        # a slot no hypothesis fills runs on as it was, fed end-of-text; its output is never read
        parents = np.zeros(len(following) * self.beams, dtype=np.int64)
        inputs = np.full(len(parents), self.end_of_text, dtype=np.int64)
        for j, row in enumerate(following):
            first, beams = kept[row]
            parents[j * self.beams : (j + 1) * self.beams] = np.arange(first, first + self.beams)
            for k, (parent, beam) in enumerate(beams):
                parents[j * self.beams + k] = first + parent
                inputs[j * self.beams + k] = beam.tokens[-1]
        return parents, inputs

    def _advance_row(
        self, row: int, tokens: list[list[int]], log_probs: list[list[float]], ends: list[float]
    ) -> list[tuple[int, Beam]]:
        """Row ``row``'s step, given each of its beams' likeliest ``tokens`` (best first), their
        ``log_probs`` and end-of-text's log-prob ``ends``."""
        w, beams = self.weight, self.live[row]
        # a candidate's score is at most its bound (CTC gains are not positive, but for a number
        # spelled anew), so candidates are scored best bound first, until the ``beams`` best that
        # go on beat the bounds of the rest
        pending: list[tuple[float, int, int]] = []  # bound, parent, token
        for parent, beam in enumerate(beams):
            end = ends[parent]
            if math.isfinite(end):  # ending here, kept for the final choice
                gain = beam.prefix.end_score - beam.prefix.score
                self.endings[row].append(Beam(list(beam.tokens), beam.score + (1.0 - w) * end + w * gain, beam.prefix))
            for token, log_prob in zip(tokens[parent], log_probs[parent], strict=True):
                if math.isfinite(log_prob):
                    pending.append((beam.score + (1.0 - w) * log_prob, parent, token))
        pending.sort(key=lambda item: -item[0])
        extensions: dict[tuple[int, int], Extension] = {}
        options: list[tuple[float, int, int, Extension]] = []  # score, parent, token, extension
        going_on: list[float] = []  # min-heap of the best scores of candidates that would go on
        for bound, parent, token in pending:
            if len(going_on) == self.beams and bound < going_on[0]:
                break
            beam = beams[parent]
            extension = self._extend(row, beam, token, parent, tokens[parent], extensions)
            adds_no_letter = token != self.end_of_text and extension.prefix.chars == beam.prefix.chars
            if adds_no_letter and beam.quiet >= MAX_QUIET:
                continue
            score = bound + w * extension.gain
            options.append((score, parent, token, extension))
            if token != self.end_of_text and len(beam.tokens) + 1 < self.caps[row]:
                (heapq.heappush if len(going_on) < self.beams else heapq.heappushpop)(going_on, score)
        options.sort(key=lambda option: -option[0])
        live: list[Beam] = []
        kept: list[tuple[int, Beam]] = []
        for score, parent, token, extension in options:
            before = beams[parent]
            prefix = extension.prefix
            if token == self.end_of_text:
                self.completed[row].append(Beam(list(before.tokens), score, prefix))
                continue
            quiet = before.quiet + 1 if prefix.chars == before.prefix.chars else 0
            beam = Beam([*before.tokens, token], score, prefix, quiet, extension.number)
            if len(beam.tokens) >= self.caps[row]:  # cut off: CTC scores it as ended
                beam.score += w * (prefix.end_score - prefix.score)
                self.completed[row].append(beam)
                continue
            live.append(beam)
            kept.append((parent, beam))
            if len(live) == self.beams:
                break
        self.live[row] = live
        finished = self.completed[row]
        # done once ``beams`` hypotheses finished and none still going could beat the best of them
        # (scores only fall as hypotheses grow)
        self.done[row] = not live or (
            len(finished) >= self.beams and max(b.score for b in finished) >= max(b.score for b in live)
        )
        return kept

    def _extend(
        self,
        row: int,
        beam: Beam,
        token: int,
        parent: int,
        ranked: list[int],
        extensions: dict[tuple[int, int], Extension],
    ) -> Extension:
        """``beam`` after ``token``: kept in ``extensions`` by (parent, token).

        A number's tokens are spelled together, from the prefix before the number, as the number
        so far is said. A token with no spelling of its own (a symbol, a letter outside the CTC
        alphabet) gains what the decoder's likeliest spellable token gains: never favoured by
        CTC over the decoder's choice, never ruled out.
        """
        key = (parent, token)
        if key in extensions:
            return extensions[key]
        scorer, table, prefix = self.scorers[row], self.table, beam.prefix
        number = table.numbers[token] if token < len(table.numbers) else None
        spelling = table.spellings[token] if token < len(table.spellings) else None
        if token == self.end_of_text:
            extension = Extension(prefix, prefix.end_score - prefix.score)
        elif number is not None and (beam.number is not None or starts_number(number)):
            start, text = beam.number or (prefix, "")
            text += number
            extended = scorer.extend(start, spell_number(text, table.ctc_tokens, table.delimiter))
            extension = Extension(extended, extended.score - prefix.score, (start, text))
        elif spelling is not None:
            extended = scorer.extend(prefix, spelling)
            extension = Extension(extended, extended.score - prefix.score)
        else:
            extension = Extension(prefix, self._likeliest_gain(row, beam, parent, ranked, extensions))
        extensions[key] = extension
        return extension

    def _likeliest_gain(
        self, row: int, beam: Beam, parent: int, ranked: list[int], extensions: dict[tuple[int, int], Extension]
    ) -> float:
        """The CTC gain of the decoder's likeliest token that has a spelling, among its ``ranked``
        likeliest (best first; 0 if none has)."""
        for other in ranked:
            if other != self.end_of_text and other < len(self.table.spellings) and self.table.spellings[other]:
                return self._extend(row, beam, other, parent, ranked, extensions).gain
        return 0.0

    def best(self) -> list[list[int]]:
        """Each row's best hypothesis (live beams count when nothing finished)."""
        rows = zip(self.completed, self.endings, self.live, strict=True)
        return [max(finished + endings or live, key=lambda b: b.score).tokens for finished, endings, live in rows]


@dataclass(frozen=True)
class JointDecoding:
    """What the joint search needs of a bundle: how the CTC head reads every decoder token, its
    characters, and the CTC weight and beam count (``ctc_weight``, ``ctc_beams`` of its config)."""

    table: TokenTable
    char_ids: dict[str, int]
    blank_id: int
    end_of_text: int
    weight: float
    beams: int

    @classmethod
    def of(
        cls, config: BundleConfig, token_texts: Sequence[str], end_of_text: int, weight: float, beams: int
    ) -> JointDecoding:
        delimiter = config.word_delimiter
        spellings = token_spellings(token_texts, config.tokens, delimiter)
        table = TokenTable(tuple(spellings), tuple(number_texts(token_texts)), tuple(config.tokens), delimiter)
        char_ids = {token: i for i, token in enumerate(config.tokens) if i != config.blank_id}
        return cls(table, char_ids, config.blank_id, end_of_text, weight, beams)

    def search(self, ctc_log_probs: Sequence[np.ndarray], caps: Sequence[int]) -> JointSearch:
        """A search for one batch, given each row's CTC log-probs (frames, vocab) and token cap.

        A row in which the CTC head hears nothing (blank is the likeliest token of every frame) gets
        no tokens: on silence Whisper's decoder writes words ("you") that no frame supports.
        """
        scorers = [CtcPrefixScorer(lp, self.blank_id, self.char_ids, self.table.delimiter) for lp in ctc_log_probs]
        heard = [bool((np.asarray(lp).argmax(axis=-1) != self.blank_id).any()) for lp in ctc_log_probs]
        caps = [cap if any_letter else 0 for cap, any_letter in zip(caps, heard, strict=True)]
        return JointSearch(self.table, scorers, self.end_of_text, self.weight, caps, self.beams)


def joint_decoding(config: BundleConfig, tokenizer: WhisperTokenizer, beams: int | None = None) -> JointDecoding | None:
    """The joint search the bundle's ``ctc_weight`` and ``ctc_beams`` ask for (``beams``, when
    given, instead of ``ctc_beams``); None at weight 0: Whisper's own greedy decoding."""
    network = config.model
    if not isinstance(network, WhisperCTCConfig) or network.ctc_weight <= 0:
        return None
    texts = tokenizer.token_texts()
    return JointDecoding.of(config, texts, tokenizer.end_of_text, network.ctc_weight, beams or network.ctc_beams)
