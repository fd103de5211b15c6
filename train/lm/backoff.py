"""Backoff n-gram language models as Python tables: ARPA in and out, linear interpolation of two
models, pruning to a size, and backoff weights recomputed so that every distribution sums to one.

All probabilities are log10, as in ARPA files. A model of order N holds ``prob[n]`` (n-gram tuple ->
log10 p(w | h)) for n = 1..N and ``backoff[n]`` (context tuple -> log10 backoff weight) for n < N.
``logprob(ngram)`` applies the usual backoff rule: p(w | h) when h w is listed, else
bo(h) x p(w | h minus its first word).

Interpolation follows the static mixture of SRILM's ``-mix-lm``: the mixed model lists every n-gram
either model lists, with probability ``weight * p_a + (1 - weight) * p_b`` (each model's own backoff
estimate where it does not list it), and its backoff weights are recomputed. Pruning keeps the
n-grams whose explicit probability differs most from the backoff estimate, weighted by how likely
their history is (Seymore and Rosenfeld's weighted difference), down to a given count.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

NGram = tuple[str, ...]
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
NO_PROB = -99.0  # ARPA's "never predicted" (the <s> unigram)
FLOOR = -10.0  # log10 p of a word a model does not know and has no <unk> for


def sentence_ngrams(words: list[str], order: int) -> Iterator[NGram]:
    """Each word of a sentence and </s> with up to ``order - 1`` words before it, from <s> on."""
    tokens = [BOS, *words, EOS]
    for i in range(1, len(tokens)):
        yield tuple(tokens[max(0, i - order + 1) : i + 1])


@dataclass
class BackoffLM:
    """A backoff n-gram model (log10 probabilities and backoff weights)."""

    order: int
    prob: dict[int, dict[NGram, float]] = field(default_factory=dict)
    backoff: dict[int, dict[NGram, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for n in range(1, self.order + 1):
            self.prob.setdefault(n, {})
            if n < self.order:
                self.backoff.setdefault(n, {})

    @property
    def vocabulary(self) -> set[str]:
        return {w for (w,) in self.prob[1]}

    def size(self) -> int:
        return sum(len(table) for table in self.prob.values())

    def logprob(self, ngram: NGram) -> float:
        """log10 p(last word | the words before it), backing off as far as needed."""
        ngram = ngram[-self.order :]
        penalty = 0.0
        for start in range(len(ngram)):
            tail = ngram[start:]
            value = self.prob[len(tail)].get(tail)
            if value is not None:
                return value + penalty
            if len(tail) > 1:
                penalty += self.backoff[len(tail) - 1].get(tail[:-1], 0.0)
        unk = self.prob[1].get((UNK,))
        return penalty + (unk if unk is not None else FLOOR)

    def sentence_logprob(self, words: list[str]) -> float:
        """log10 p of a sentence (with </s>), the history starting at <s>."""
        return sum(self.logprob(ngram) for ngram in sentence_ngrams(words, self.order))

    def restrict(self, keep: set[str]) -> BackoffLM:
        """The n-grams whose words are all in ``keep`` (plus <s>, </s>, <unk>); call
        :meth:`renormalise` afterwards."""
        allowed = keep | {BOS, EOS, UNK}
        out = BackoffLM(self.order)
        for n, table in self.prob.items():
            out.prob[n] = {g: p for g, p in table.items() if all(w in allowed for w in g)}
        for n, table in self.backoff.items():
            out.backoff[n] = {g: b for g, b in table.items() if g in out.prob[n]}
        return out

    def renormalise(self) -> BackoffLM:
        """Unigrams scaled to sum to one, then every backoff weight recomputed (in place)."""
        unigrams = self.prob[1]
        total = sum(10.0**p for (w,), p in unigrams.items() if w != BOS)
        shift = math.log10(total)
        for key, p in unigrams.items():
            unigrams[key] = NO_PROB if key == (BOS,) else p - shift
        recompute_backoffs(self)
        return self


def recompute_backoffs(lm: BackoffLM) -> None:
    """bo(h) = (1 - sum of p(w|h) over listed h w) / (1 - sum of p(w|h') over the same w), order by
    order, so each lower order's weights are final before the next order needs them."""
    for n in range(2, lm.order + 1):
        listed: dict[NGram, float] = defaultdict(float)
        lower: dict[NGram, float] = defaultdict(float)
        for ngram, p in lm.prob[n].items():
            context = ngram[:-1]
            listed[context] += 10.0**p
            lower[context] += 10.0 ** lm.logprob(ngram[1:])
        table = {}
        for context in lm.prob[n - 1]:
            if context in listed:
                numerator = max(1.0 - listed[context], 1e-9)
                denominator = max(1.0 - lower[context], 1e-9)
                table[context] = math.log10(numerator / denominator)
            else:
                table[context] = 0.0
        lm.backoff[n - 1] = table


def interpolate(a: BackoffLM, b: BackoffLM, weight: float) -> BackoffLM:
    """The static mixture ``weight * a + (1 - weight) * b`` over the union of their n-grams."""
    if not 0.0 < weight < 1.0:
        raise ValueError(f"mixture weight must lie strictly between 0 and 1, not {weight}")
    order = max(a.order, b.order)
    mixed = BackoffLM(order)
    for n in range(1, order + 1):
        keys = set(a.prob.get(n, {})) | set(b.prob.get(n, {}))
        table = mixed.prob[n]
        for ngram in keys:
            if ngram == (BOS,):
                table[ngram] = NO_PROB
                continue
            p = weight * 10.0 ** a.logprob(ngram) + (1.0 - weight) * 10.0 ** b.logprob(ngram)
            table[ngram] = math.log10(p)
        logger.info("mixed %d-grams: %d", n, len(table))
    return mixed.renormalise()


def history_logprob(lm: BackoffLM, history: NGram, cache: dict[NGram, float]) -> float:
    """log10 p(history) by the chain rule (from <s> when it starts there), memoised."""
    if not history:
        return 0.0
    known = cache.get(history)
    if known is not None:
        return known
    if history == (BOS,):
        value = 0.0
    elif len(history) == 1:
        value = lm.prob[1].get(history, FLOOR)
    else:
        value = history_logprob(lm, history[:-1], cache) + lm.logprob(history)
    cache[history] = value
    return value


def prune(lm: BackoffLM, max_ngrams: int) -> BackoffLM:
    """Keep all unigrams and the higher-order n-grams that matter most, at most ``max_ngrams`` in
    all; an n-gram that is the history of a kept longer one is always kept. Backoff weights are
    recomputed for what remains."""
    if lm.size() <= max_ngrams:
        return lm
    cache: dict[NGram, float] = {}
    scores: dict[int, dict[NGram, float]] = {}
    for n in range(2, lm.order + 1):
        table = {}
        for ngram, p in lm.prob[n].items():
            context = ngram[:-1]
            estimate = lm.backoff[n - 1].get(context, 0.0) + lm.logprob(ngram[1:])
            table[ngram] = 10.0 ** (history_logprob(lm, context, cache) + p) * abs(p - estimate)
        scores[n] = table
    cache.clear()
    # An n-gram stays when it scores high enough or is the history of one that stays: rank each by
    # the best score among itself and its extensions, histories before extensions on ties.
    ranked: list[tuple[float, int, NGram]] = []
    best_extension: dict[NGram, float] = {}
    for n in range(lm.order, 1, -1):
        below: dict[NGram, float] = {}
        for ngram, score in scores[n].items():
            value = max(score, best_extension.get(ngram, 0.0))
            ranked.append((-value, n, ngram))
            if value > below.get(ngram[:-1], 0.0):
                below[ngram[:-1]] = value
        best_extension = below
    ranked.sort()
    kept: dict[int, set[NGram]] = {n: set() for n in range(2, lm.order + 1)}
    for _, n, ngram in ranked[: max_ngrams - len(lm.prob[1])]:
        kept[n].add(ngram)
    out = BackoffLM(lm.order)
    out.prob[1] = dict(lm.prob[1])
    for n in range(2, lm.order + 1):
        out.prob[n] = {g: lm.prob[n][g] for g in kept[n]}
    recompute_backoffs(out)
    logger.info("pruned %d -> %d n-grams", lm.size(), out.size())
    return out


def read_arpa(path: Path) -> BackoffLM:
    """An ARPA file's n-grams (words may be separated by spaces or tabs)."""
    counts: dict[int, int] = {}
    section = 0
    lm: BackoffLM | None = None
    with path.open(encoding="utf-8") as lines:
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            if line.startswith("\\"):
                if line.endswith("-grams:"):
                    section = int(line[1:].split("-")[0])
                    if lm is None:
                        lm = BackoffLM(max(counts))
                elif line == "\\end\\":
                    break
                continue
            if section == 0:
                if line.startswith("ngram "):
                    n, count = line[6:].split("=")
                    counts[int(n)] = int(count)
                continue
            assert lm is not None
            parts = line.split()
            ngram = tuple(parts[1 : 1 + section])
            lm.prob[section][ngram] = float(parts[0])
            if section < lm.order:
                lm.backoff[section][ngram] = float(parts[1 + section]) if len(parts) > 1 + section else 0.0
    if lm is None:
        raise ValueError(f"{path}: no n-gram sections")
    for n, count in counts.items():
        if len(lm.prob[n]) != count:
            raise ValueError(f"{path}: {len(lm.prob[n])} {n}-grams listed, the header says {count}")
    return lm


def arpa_lines(lm: BackoffLM) -> Iterator[str]:
    yield "\\data\\"
    for n in range(1, lm.order + 1):
        yield f"ngram {n}={len(lm.prob[n])}"
    for n in range(1, lm.order + 1):
        yield ""
        yield f"\\{n}-grams:"
        backoffs = lm.backoff.get(n)
        for ngram in sorted(lm.prob[n]):
            words = " ".join(ngram)
            if backoffs is None:
                yield f"{lm.prob[n][ngram]:.6f}\t{words}"
            else:
                yield f"{lm.prob[n][ngram]:.6f}\t{words}\t{backoffs.get(ngram, 0.0):.6f}"
    yield ""
    yield "\\end\\"


def write_arpa(lm: BackoffLM, path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for line in arpa_lines(lm):
            out.write(line + "\n")


def perplexity(lm: BackoffLM, sentences: Iterable[str]) -> float:
    total, tokens = 0.0, 0
    for sentence in sentences:
        words = sentence.split()
        total += lm.sentence_logprob(words)
        tokens += len(words) + 1
    return 10.0 ** (-total / max(tokens, 1))


def mixture_perplexity(a: BackoffLM, b: BackoffLM, weight: float, sentences: Iterable[str]) -> float:
    """Perplexity of ``weight * a + (1 - weight) * b`` mixed word by word, on sentences, without
    building the mixture: the same as :func:`interpolate`'s model where either model lists the
    n-gram, close to it elsewhere (there the static mixture backs off with its own weights)."""
    order = max(a.order, b.order)
    total, tokens = 0.0, 0
    for sentence in sentences:
        for ngram in sentence_ngrams(sentence.split(), order):
            total += math.log10(weight * 10.0 ** a.logprob(ngram) + (1.0 - weight) * 10.0 ** b.logprob(ngram))
            tokens += 1
    return 10.0 ** (-total / max(tokens, 1))


def best_weight(
    a: BackoffLM, b: BackoffLM, weights: list[float], dev: dict[str, list[str]]
) -> tuple[float, dict[str, dict[str, float]]]:
    """The weight of ``a`` in its mixture with ``b`` with the lowest mean log-perplexity over the dev
    sets (sentences by set name), and every weight's perplexities; the middle weight without dev text."""
    table = {
        str(w): {name: round(mixture_perplexity(a, b, w, sents), 1) for name, sents in dev.items()} for w in weights
    }
    if not dev:
        return weights[len(weights) // 2], table

    def mean_log(w: float) -> float:
        values = table[str(w)].values()
        return sum(map(math.log, values)) / len(values)

    return min(weights, key=mean_log), table
