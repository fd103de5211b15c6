"""Transcript normalisation shared by training, evaluation and decoding."""

from __future__ import annotations

import re

_NOT_VOCAB = re.compile(r"[^a-z' ]+")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower-case, keep letters, apostrophes and single spaces (the character vocabulary)."""
    text = text.lower().replace("’", "'")
    text = _NOT_VOCAB.sub(" ", text)
    text = " ".join(w.strip("'") for w in _SPACES.split(text))
    return _SPACES.sub(" ", text).strip()
