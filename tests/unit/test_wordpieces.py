"""Word pieces learned by byte-pair merges, and the spelling that training and decoding share."""

from __future__ import annotations

from app.asr.configs import ENGLISH_CHARS
from app.asr.ctc import text_to_ids
from train.data.wordpieces import learn_word_pieces

TEXTS = ["the thing is the thing", "then there is nothing", "sing the song", "think then"]


def test_the_most_frequent_pairs_merge_first_and_never_across_words() -> None:
    tokens = learn_word_pieces(TEXTS, list(ENGLISH_CHARS), len(ENGLISH_CHARS) + 4)
    assert tokens[: len(ENGLISH_CHARS)] == ENGLISH_CHARS
    assert tokens[len(ENGLISH_CHARS) :] == ["th", "the", "in", "thin"]  # "thin" and "ing" tie at 4: first seen wins
    assert all(" " not in t for t in tokens[len(ENGLISH_CHARS) :])
    assert learn_word_pieces(TEXTS, list(ENGLISH_CHARS), len(ENGLISH_CHARS) + 4) == tokens  # deterministic


def test_learning_stops_when_no_pair_repeats() -> None:
    tokens = learn_word_pieces(["ab cd"], list(ENGLISH_CHARS), 100)
    assert tokens == ENGLISH_CHARS


def test_pieces_shorten_the_targets_and_spell_every_word_back() -> None:
    tokens = learn_word_pieces(TEXTS, list(ENGLISH_CHARS), len(ENGLISH_CHARS) + 12)
    for text in [*TEXTS, "an unseen word zebra"]:
        ids = text_to_ids(text, tokens)
        assert "".join(tokens[i] for i in ids) == text
    assert sum(len(text_to_ids(t, tokens)) for t in TEXTS) < 0.7 * sum(len(t) for t in TEXTS)
