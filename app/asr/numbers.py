"""Spelling numbers, dates and times out as words (the vocabulary has no digits).

Shared by the training data generator and by ``app.asr.text.spoken_form``, which scores and shapes
written-form transcripts (digits, years, times) into the spoken form the server outputs.
"""

from __future__ import annotations

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand"), (100, "hundred")]
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def number_to_words(n: int) -> str:
    """Cardinal number in words, e.g. 1042 -> 'one thousand and forty two'."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            words = f"{number_to_words(head)} {name}"
            if rest == 0:
                return words
            joiner = " and " if rest < 100 else " "
            return words + joiner + number_to_words(rest)
    raise AssertionError("unreachable")


def ordinal_to_words(n: int) -> str:
    """Ordinal number in words, e.g. 21 -> 'twenty first'."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_to_words(year: int) -> str:
    """A year as people say it: 1987 -> 'nineteen eighty seven', 2005 -> 'two thousand and five'."""
    if 2000 <= year < 2010 or year % 1000 == 0:
        return number_to_words(year)
    head, tail = divmod(year, 100)
    if tail == 0:
        return number_to_words(head) + " hundred"
    if tail < 10:
        return f"{number_to_words(head)} oh {number_to_words(tail)}"
    return f"{number_to_words(head)} {number_to_words(tail)}"


def time_to_words(hour: int, minute: int) -> str:
    """A clock time: (7, 5) -> 'seven oh five', (9, 0) -> "nine o'clock"."""
    if minute == 0:
        return f"{number_to_words(hour)} o'clock"
    if minute < 10:
        return f"{number_to_words(hour)} oh {number_to_words(minute)}"
    return f"{number_to_words(hour)} {number_to_words(minute)}"


def digits_to_words(digits: str) -> str:
    """Read a digit string one digit at a time: '0351' -> 'zero three five one'."""
    return " ".join(_ONES[int(d)] for d in digits)
