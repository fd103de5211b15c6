"""The synthetic voices: the two held out of training are the only ones the held-out sets speak,
and no training voice is one of them."""

from __future__ import annotations

import random
from collections import Counter

from train.data.voices import (
    HELD_OUT_ESPEAK_LANG,
    HELD_OUT_FLITE,
    held_out_voice,
    sample_test_voice,
    sample_train_voice,
)


def is_held_out(source: str) -> bool:
    return source.startswith(f"espeak:{HELD_OUT_ESPEAK_LANG}") or source == f"flite:{HELD_OUT_FLITE}"


def test_held_out_voices_are_the_two_and_both_come() -> None:
    rng = random.Random(0)
    kinds = Counter(held_out_voice(rng).engine for _ in range(200))
    assert set(kinds) == {"espeak", "flite"} and min(kinds.values()) > 60
    assert all(is_held_out(held_out_voice(rng).source) for _ in range(200))
    assert held_out_voice(rng, 0).name.startswith(HELD_OUT_ESPEAK_LANG)
    assert held_out_voice(rng, 1).name == HELD_OUT_FLITE


def test_no_training_voice_is_held_out_and_the_test_voices_hold_them_a_third_each() -> None:
    rng = random.Random(1)
    assert not any(is_held_out(sample_train_voice(rng).source) for _ in range(2000))
    test = Counter(is_held_out(sample_test_voice(rng).source) for _ in range(3000))
    assert 0.6 < test[True] / 3000 < 0.73  # two thirds: the held-out accent and the held-out flite voice


def test_the_test_voices_draw_as_before() -> None:
    """The synthetic test set's voices are drawn by seed; these are the draws it was made with, so
    the held-out set stays the same set."""
    rng = random.Random(1234)
    drawn = [(v.source, v.rate, v.pitch) for v in (sample_test_voice(rng) for _ in range(6))]
    assert drawn == [
        ("flite:rms", 0.97, None),
        ("espeak:en-gb-x-gbcwmd+john", 0.86, 35),
        ("espeak:en-gb-x-gbcwmd+f4", 0.91, 31),
        ("espeak:en-gb-x-gbcwmd+f4", 1.01, 60),
        ("flite:kal", 0.95, None),
        ("espeak:en-gb-x-gbcwmd", 0.98, 45),
    ]
