"""Spelling numbers out as words: kept here for the data recipe's imports; the code lives in ``app.asr.numbers``."""

from __future__ import annotations

from app.asr.numbers import (
    MONTHS,
    WEEKDAYS,
    digits_to_words,
    number_to_words,
    ordinal_to_words,
    time_to_words,
    year_to_words,
)

__all__ = [
    "MONTHS",
    "WEEKDAYS",
    "digits_to_words",
    "number_to_words",
    "ordinal_to_words",
    "time_to_words",
    "year_to_words",
]
