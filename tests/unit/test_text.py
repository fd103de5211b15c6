"""Transcript normalisation: the character vocabulary, and written English in its spoken form."""

from __future__ import annotations

import random
import re

import pytest

from app.asr.numbers import number_to_words
from app.asr.text import normalize_text, spoken_form


def test_normalize_keeps_the_vocabulary_only() -> None:
    assert normalize_text("  It’s  a TEST -- 'quoted', ok?  ") == "it's a test quoted ok"


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("I have 3 cats", "i have three cats"),
        ("1,042 people", "one thousand and forty two people"),
        ("in 1990 and 2005", "in nineteen ninety and two thousand and five"),
        ("the year 1905", "the year nineteen oh five"),
        ("3.5 and 0.25", "three point five and zero point two five"),
        ("a .5 chance", "a point five chance"),
        ("5% or 2.5 %", "five percent or two point five percent"),
        ("$3", "three dollars"),
        ("$1", "one dollar"),
        ("$3.50", "three dollars and fifty cents"),
        ("$0.01", "one cent"),
        ("$2 million", "two million dollars"),
        ("£5", "five pounds"),
        ("the 1st, 2nd, 3rd and 21st", "the first second third and twenty first"),
        ("the 100th time", "the one hundredth time"),
        ("at 10:30", "at ten thirty"),
        ("at 7:05 or 9:00", "at seven oh five or nine o'clock"),
        ("the 1990s", "the nineteen nineties"),
        ("the '80s and 70s", "the eighties and seventies"),
        ("a well-known, state-of-the-art idea", "a well known state of the art idea"),
        ("Mr. Smith met Dr. Jones", "mister smith met doctor jones"),
        ("Mrs. Brown, Dr Who", "missus brown doctor who"),
        ("St. Louis on Main St.", "saint louis on main street"),
        ("salt & pepper", "salt and pepper"),
        ("café naïve", "cafe naive"),
        ("007", "zero zero seven"),
        ("call 1234567890123", "call one two three four five six seven eight nine zero one two three"),
        ("7342 and 2-891", "seven three four two and two eight nine one"),
        ("555-1234 or 7-3-4-2", "five five five one two three four or seven three four two"),
        ("3000 or 2500 or 10000", "three thousand or two thousand five hundred or ten thousand"),
        ("aged 5-10, in 1990-1995", "aged five ten in nineteen ninety nineteen ninety five"),
        ("pages 100-200", "pages one hundred two hundred"),
        ("It’s OK!", "it's ok"),
        ("", ""),
    ],
)
def test_spoken_form(written: str, spoken: str) -> None:
    assert spoken_form(written) == spoken


def test_spoken_form_is_idempotent_on_spoken_text() -> None:
    text = "the number is forty two"
    assert spoken_form(text) == text
    assert spoken_form(spoken_form("At 10:30 the 1st of 2 was $3.50")) == spoken_form("At 10:30 the 1st of 2 was $3.50")


def test_spoken_form_reads_quantities_as_number_to_words() -> None:
    for n in (0, 7, 19, 20, 99, 101, 999, 3000, 10_000, 2_500_000):
        assert spoken_form(str(n)) == number_to_words(n)


def test_spoken_form_never_raises_and_stays_in_the_vocabulary() -> None:
    alphabet = "0123456789" * 4 + "abcXYZ .,:;'’-%$£€&/+#@\t\n" + "éßø½²٣中🙂\u0301\x00"
    rng = random.Random(0)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    texts += ["9" * 5000, "$" + "9" * 5000 + ".25", "1" * 5000 + "th", "1" * 5000 + "%", "9" * 4 + ":" + "9" * 4]
    for text in texts:
        out = spoken_form(text)
        assert re.fullmatch(r"(?:[a-z']+(?: [a-z']+)*)?", out), (text, out)
