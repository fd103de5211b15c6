"""Backoff n-gram tables for the beam decoder's LM: ARPA in and out, mixing, pruning, and the
general English model read from the pocketsphinx package."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from train.lm.backoff import (
    BOS,
    EOS,
    BackoffLM,
    best_weight,
    interpolate,
    mixture_perplexity,
    perplexity,
    prune,
    read_arpa,
    write_arpa,
)

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", EOS]


def toy_model(seed: int, order: int = 3) -> BackoffLM:
    """A random but properly normalised backoff model over WORDS: random unigrams, and for some
    histories a few listed words whose probabilities sum below one; backoffs recomputed."""
    rng = random.Random(seed)
    lm = BackoffLM(order)
    weights = [rng.random() + 0.1 for _ in WORDS]
    lm.prob[1] = {(w,): math.log10(x / sum(weights)) for w, x in zip(WORDS, weights, strict=True)}
    lm.prob[1][(BOS,)] = -99.0
    histories: list[tuple[str, ...]] = [(BOS,)] + [(w,) for w in WORDS[:-1]]
    for n in range(2, order + 1):
        listed = {}
        for history in histories:
            if rng.random() < 0.3:
                continue
            chosen = rng.sample(WORDS, 3)
            shares = [rng.random() for _ in chosen]
            mass = rng.uniform(0.3, 0.8)
            for w, share in zip(chosen, shares, strict=True):
                listed[(*history, w)] = math.log10(mass * share / sum(shares))
        lm.prob[n] = listed
        histories = [g for g in listed if g[-1] != EOS]
    lm.renormalise()
    return lm


def total_mass(lm: BackoffLM, history: tuple[str, ...]) -> float:
    return sum(10.0 ** lm.logprob((*history, w)) for w in WORDS)


HISTORIES = [(BOS,), ("the",), ("the", "cat"), (BOS, "a"), ("dog", "dog"), ("mat", "on")]


@pytest.mark.parametrize("history", HISTORIES)
def test_a_toy_model_and_its_mixture_are_distributions(history: tuple[str, ...]) -> None:
    a, b = toy_model(1), toy_model(2, order=2)
    assert total_mass(a, history) == pytest.approx(1.0, abs=1e-9)
    assert total_mass(b, history) == pytest.approx(1.0, abs=1e-9)
    mixed = interpolate(a, b, 0.3)
    assert mixed.order == 3
    assert total_mass(mixed, history) == pytest.approx(1.0, abs=1e-9)


def test_the_mixture_gives_each_listed_ngram_the_weighted_sum_of_both_models() -> None:
    a, b = toy_model(3), toy_model(4)
    mixed = interpolate(a, b, 0.7)
    for n in (2, 3):
        for ngram in list(a.prob[n])[:5] + list(b.prob[n])[:5]:
            expected = 0.7 * 10.0 ** a.logprob(ngram) + 0.3 * 10.0 ** b.logprob(ngram)
            assert 10.0 ** mixed.logprob(ngram) == pytest.approx(expected, rel=1e-9)
    text = ["the cat sat on the mat", "a dog sat", "the dog"]
    # the word-by-word mixture differs only where neither model lists the n-gram
    assert perplexity(mixed, text) == pytest.approx(mixture_perplexity(a, b, 0.7, text), rel=0.02)
    with pytest.raises(ValueError):
        interpolate(a, b, 1.0)


def test_the_mixture_weight_is_the_one_the_dev_text_prefers() -> None:
    a, b = toy_model(8), toy_model(9)
    dev_a = {"dev": [" ".join(s) for s in (["the", "cat"], ["a", "dog", "sat"])]}
    weights = [0.1, 0.5, 0.9]
    chosen, table = best_weight(a, b, weights, dev_a)
    assert set(table) == {"0.1", "0.5", "0.9"}
    assert table[str(chosen)]["dev"] == min(row["dev"] for row in table.values())
    assert best_weight(a, b, weights, {})[0] == 0.5


def test_pruning_fits_the_budget_keeps_every_history_and_stays_normalised() -> None:
    lm = interpolate(toy_model(5), toy_model(6), 0.5)
    budget = lm.size() - 6
    pruned = prune(lm, budget)
    assert pruned.size() <= budget
    assert pruned.prob[1] == lm.prob[1]
    for n in (2, 3):
        assert set(pruned.prob[n]) <= set(lm.prob[n])
    for ngram in pruned.prob[3]:
        assert ngram[:-1] in pruned.prob[2]
    for history in HISTORIES:
        assert total_mass(pruned, history) == pytest.approx(1.0, abs=1e-9)
    assert prune(lm, lm.size()) is lm


def test_an_arpa_file_reads_back_as_written(tmp_path: Path) -> None:
    lm = toy_model(7)
    write_arpa(lm, tmp_path / "lm.arpa")
    back = read_arpa(tmp_path / "lm.arpa")
    assert back.order == lm.order
    for n in (1, 2, 3):
        assert back.prob[n].keys() == lm.prob[n].keys()
        assert all(back.prob[n][g] == pytest.approx(p, abs=1e-6) for g, p in lm.prob[n].items())
    for n in (1, 2):
        assert all(back.backoff[n][g] == pytest.approx(b, abs=1e-6) for g, b in lm.backoff[n].items())
    broken = (tmp_path / "lm.arpa").read_text().replace("ngram 2=", "ngram 2=1")
    (tmp_path / "broken.arpa").write_text(broken)
    with pytest.raises(ValueError, match="header says"):
        read_arpa(tmp_path / "broken.arpa")


def test_the_packaged_english_lm_reads_as_pocketsphinx_scores_it() -> None:
    pocketsphinx = pytest.importorskip("pocketsphinx")
    from train.lm.sphinx import LOG10_BASE, packaged_lm, read_sphinx_trie

    lm = read_sphinx_trie(packaged_lm())
    assert (len(lm.prob[1]), len(lm.prob[2]), len(lm.prob[3])) == (72547, 2051541, 1669625)
    reference = pocketsphinx.NGramModel(pocketsphinx.Config(), pocketsphinx.LogMath(), str(packaged_lm()))
    rng = random.Random(0)
    listed = rng.sample(sorted(lm.prob[3]), 20) + rng.sample(sorted(lm.prob[2]), 20)
    backed_off = [("zulu", "the", "people"), ("of", "quick", "zulu"), ("in", "zulu"), ("people",)]
    for ngram in listed + backed_off:
        theirs = reference.prob(list(reversed(ngram))) * LOG10_BASE  # pocketsphinx takes the word first
        assert lm.logprob(ngram) == pytest.approx(theirs, abs=2e-4), ngram
