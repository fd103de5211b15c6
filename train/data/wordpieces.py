"""Word pieces: a small subword vocabulary learned from training text by byte-pair merges.

The pieces never cross a word boundary: the word delimiter stays a token of its own, so greedy
and beam decoding, word timings and the lexicon work unchanged. Text is split into pieces by
``app.asr.ctc.spell`` (the longest piece first), which needs nothing but the token list, so a
bundle's ``tokens`` are its whole tokenizer.
"""

from __future__ import annotations

import itertools
from collections import Counter


def learn_word_pieces(texts: list[str], base: list[str], size: int) -> list[str]:
    """``base`` (blank, delimiter, characters) followed by merged pieces, ``size`` tokens in all.

    Classic byte-pair encoding over the words of ``texts``, weighted by how often each word
    occurs: the most frequent adjacent pair of symbols becomes a new symbol, until the vocabulary
    holds ``size`` tokens or no pair occurs twice. Ties go to the pair seen first, so the result
    is deterministic.
    """
    if size <= len(base):
        return list(base)
    counts = Counter(word for text in texts for word in text.split())
    words = [(list(word), n) for word, n in counts.items()]
    tokens = list(base)
    known = set(tokens)
    while len(tokens) < size:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, n in words:
            for pair in itertools.pairwise(symbols):
                pairs[pair] += n
        best = _best_new_pair(pairs, known)
        if best is None:
            break
        merged = best[0] + best[1]
        tokens.append(merged)
        known.add(merged)
        words = [(_merge(symbols, best, merged), n) for symbols, n in words]
    return tokens


def _best_new_pair(pairs: Counter[tuple[str, str]], known: set[str]) -> tuple[str, str] | None:
    for pair, n in pairs.most_common():
        if n < 2:
            return None
        if pair[0] + pair[1] not in known:
            return pair
    return None


def _merge(symbols: list[str], pair: tuple[str, str], merged: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out
