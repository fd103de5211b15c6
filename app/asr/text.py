"""Transcript normalisation shared by training, evaluation and decoding.

``normalize_text`` maps any transcript onto the character vocabulary (a-z, apostrophe, space).
``spoken_form`` first turns written English, as Whisper and people write it (digits, "5%", "$3",
"1st", "10:30", "1990s", "Mr.", "&"), into the words a speaker says, then normalises: the server's
output convention, used to score every system alike and to shape Whisper-decoder output. Where the
written form is ambiguous it picks one reading: 1100-2099 are years ("nineteen ninety"), other
comma-less numbers of four or more digits that are not round ("7342", "2-891") are codes read digit
by digit, the rest are cardinals ("1,042", "3000").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from app.asr.numbers import digits_to_words, number_to_words, ordinal_to_words, time_to_words, year_to_words

_NOT_VOCAB = re.compile(r"[^a-z' ]+")
_SPACES = re.compile(r"\s+")

_MAX_DIGITS = 12  # longer digit runs (ids, phone numbers) are read one digit at a time
_NUMBER = r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?"
_ABBREVIATIONS = {
    "mr": "mister",
    "mrs": "missus",
    "ms": "miss",
    "dr": "doctor",
    "jr": "junior",
    "vs": "versus",
    "etc": "et cetera",
}
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence")}
_CURRENCIES["€"] = ("euro", "euros", "cent", "cents")


def normalize_text(text: str) -> str:
    """Lower-case, keep letters, apostrophes and single spaces (the character vocabulary)."""
    text = text.lower().replace("’", "'")
    text = _NOT_VOCAB.sub(" ", text)
    text = " ".join(w.strip("'") for w in _SPACES.split(text))
    return _SPACES.sub(" ", text).strip()


def spoken_form(text: str) -> str:
    """Written English in the server's output convention: numbers and symbols spelled out, then normalised.

    "Dr. Smith paid $3.50 at 10:30 on the 1st" -> "doctor smith paid three dollars and fifty cents at
    ten thirty on the first". Deterministic, and total: any string gives a (possibly empty) result.
    """
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.replace("’", "'").replace("&", " and ")
    for pattern, spell in _RULES:
        text = pattern.sub(spell, text)
    return normalize_text(text.replace("%", " percent "))


def _cardinal(digits: str) -> str:
    """An integer written in digits, in words; leading zeros and long runs are read digit by digit."""
    if len(digits) > _MAX_DIGITS or (len(digits) > 1 and digits.startswith("0")):
        return digits_to_words(digits)
    return number_to_words(int(digits))


def _decimal(number: str) -> str:
    """'1,234.5' -> 'one thousand two hundred and thirty four point five'."""
    whole, _, fraction = number.replace(",", "").partition(".")
    words = _cardinal(whole)
    return f"{words} point {digits_to_words(fraction)}" if fraction else words


def _plural(words: str) -> str:
    """The plural of the last word: 'nineteen ninety' -> 'nineteen nineties'."""
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + ("es" if last.endswith("x") else "s")
    return f"{head} {last}".strip()


def _abbreviation(m: re.Match[str]) -> str:
    word = m[1].lower()
    if word == "st":
        return " saint " if m[2] else " street "
    return f" {_ABBREVIATIONS[word]} "


def _money(m: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[m["symbol"]]
    number, scale = m["amount"], m["scale"]
    if scale:
        return f" {_decimal(number)} {scale.lower()} {many} "
    whole, _, fraction = number.replace(",", "").partition(".")
    if len(fraction) != 2:
        return f" {_decimal(number)} {one if number == '1' else many} "
    words = f"{_cardinal(whole)} {one if whole == '1' else many}"
    cents = int(fraction)
    if not cents:
        return f" {words} "
    cents_words = f"{number_to_words(cents)} {sub_one if cents == 1 else sub_many}"
    return f" {cents_words} " if not whole.strip("0") else f" {words} and {cents_words} "


def _ordinal(m: re.Match[str]) -> str:
    digits = m[1]
    return f" {digits_to_words(digits)} {m[2]} " if len(digits) > _MAX_DIGITS else f" {ordinal_to_words(int(digits))} "


def _decade(m: re.Match[str]) -> str:
    digits = m[1]
    return f" {_plural(year_to_words(int(digits)) if len(digits) == 4 else _cardinal(digits))} "


def _time(m: re.Match[str]) -> str:
    hour, minute = int(m[1]), int(m[2])
    if hour <= 24 and minute < 60:
        return f" {time_to_words(hour, minute)} "
    return f" {_cardinal(m[1])} {_cardinal(m[2])} "


def _is_year(digits: str) -> bool:
    return len(digits) == 4 and digits.isdigit() and 1100 <= int(digits) < 2100


def _number(m: re.Match[str]) -> str:
    """Years as said (1990), codes digit by digit (7342, no comma, not round), quantities as cardinals."""
    number = m[0]
    if _is_year(number):
        return f" {year_to_words(int(number))} "
    if len(number) >= 4 and number.isdigit() and not number.endswith("00"):
        return f" {digits_to_words(number)} "
    return f" {_decimal(number)} "


def _digit_groups(m: re.Match[str]) -> str:
    """'2-891', '555-1234', '7-3-4-2': a code, read digit by digit; '5-10', '1990-1995', '100-200': numbers."""
    groups = m[0].split("-")
    numbers = all(_is_year(g) or g.endswith("00") for g in groups)
    if len(groups) >= 3 or (any(len(g) >= 3 for g in groups) and not numbers):
        return f" {digits_to_words(''.join(groups))} "
    return " " + " ".join(groups) + " "


_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"\b(mrs|mr|ms|dr|jr|st|vs|etc)\.(\s+(?=[A-Z]))?", re.IGNORECASE), _abbreviation),
    (re.compile(r"\b(Mrs|Mr|Ms|Dr|St)(\s+)(?=[A-Z])"), _abbreviation),
    (re.compile(rf"(?P<symbol>[$£€])\s?(?P<amount>{_NUMBER})(?:\s+(?P<scale>thousand|[mbtr]illion)\b)?", re.I), _money),
    (re.compile(rf"({_NUMBER})\s?%"), lambda m: f" {_decimal(m[1])} percent "),
    (re.compile(r"(?<![0-9])([0-9]+)(st|nd|rd|th)\b", re.IGNORECASE), _ordinal),
    (re.compile(r"(?<![0-9.,])'?([0-9]0|[0-9]{3}0)'?s\b"), _decade),
    (re.compile(r"(?<![0-9])([0-9]{1,2}):([0-9]{2})(?![0-9])"), _time),
    (re.compile(r"(?<![0-9.,-])[0-9]+(?:-[0-9]+)+(?![0-9]|[.,-][0-9])"), _digit_groups),
    (re.compile(r"(?<![0-9])\.([0-9]+)"), lambda m: f" point {digits_to_words(m[1])} "),
    (re.compile(_NUMBER), _number),
]
