"""English sentences from text installed by Debian packages: WordNet, GCIDE and fortunes.

Sentences are normalised to the model's vocabulary and kept only when every word is in the
system word list (wamerican), so that a synthesiser reads exactly what the transcript says.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from app.asr.text import normalize_text

logger = logging.getLogger(__name__)

WORDNET = Path("/usr/share/dictd/wn.dict.dz")
GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
FORTUNES = Path("/usr/share/games/fortunes")
WORD_LIST = Path("/usr/share/dict/american-english")

_QUOTED = re.compile(r'"([^"]{8,200})"')
_GLOSS = re.compile(r"^\s+(?:[nvar]|adj|adv)?\s*\d+:\s+([^;\"\[]+)")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_DIGIT_OR_SYMBOL = re.compile(r"[0-9@#$%&*_=+<>/\\|{}\[\]]")
_VOWEL = re.compile(r"[aeiouy]")


def load_word_list(path: Path = WORD_LIST) -> set[str]:
    """Lower-cased words of the system dictionary (wamerican)."""
    words = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        word = normalize_text(line)
        if word and " " not in word:
            words.add(word)
    return words


def clean_sentence(raw: str, words: set[str], min_words: int = 3, max_words: int = 14) -> str | None:
    """Normalise ``raw``; return it if it is a readable sentence of known words, else None."""
    if _DIGIT_OR_SYMBOL.search(raw):
        return None
    text = normalize_text(raw)
    tokens = text.split()
    if not min_words <= len(tokens) <= max_words:
        return None
    for token in tokens:
        if token not in words or (len(token) > 1 and not _VOWEL.search(token)):
            return None
    return text


def wordnet_sentences(path: Path = WORDNET) -> Iterator[str]:
    """Quoted usage examples and the first gloss of each WordNet sense."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
        entry: list[str] = []
        for line in handle:
            if line and not line[0].isspace():
                yield from _wordnet_entry(entry)
                entry = []
            entry.append(line.rstrip("\n"))
        yield from _wordnet_entry(entry)


def _wordnet_entry(lines: list[str]) -> Iterator[str]:
    text = " ".join(s.strip() for s in lines)
    yield from _QUOTED.findall(text)
    for line in lines:
        match = _GLOSS.match(line)
        if match:
            yield match.group(1)


def gcide_sentences(path: Path = GCIDE) -> Iterator[str]:
    """Quoted citations and definition sentences from the GCIDE dictionary."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
        paragraph: list[str] = []
        for line in handle:
            if line.strip():
                paragraph.append(line.strip())
                continue
            yield from _gcide_paragraph(" ".join(paragraph))
            paragraph = []


def _gcide_paragraph(text: str) -> Iterator[str]:
    if not text or "\\" in text.split(" ", 1)[0]:
        return  # headword line
    text = re.sub(r"\[[^\]]*\]|--\S+|\{|\}", " ", text)
    text = re.sub(r"^\d+\.\s*", "", text)
    yield from _QUOTED.findall(text)
    yield from _SENTENCE_END.split(re.sub(r'"[^"]*"', " ", text))


def fortune_sentences(folder: Path = FORTUNES) -> Iterator[str]:
    """Sentences of the plain-text fortune cookie files, attributions removed."""
    for path in sorted(folder.iterdir()):
        if path.suffix or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for cookie in text.split("\n%\n"):
            body = "\n".join(ln for ln in cookie.splitlines() if not ln.strip().startswith("--"))
            yield from _SENTENCE_END.split(" ".join(body.split()))


def real_sentences(words: set[str]) -> dict[str, list[str]]:
    """Clean, de-duplicated sentences per source ('wordnet', 'gcide', 'fortunes'), in file order."""
    sources: dict[str, Iterable[str]] = {
        "wordnet": wordnet_sentences() if WORDNET.exists() else [],
        "gcide": gcide_sentences() if GCIDE.exists() else [],
        "fortunes": fortune_sentences() if FORTUNES.exists() else [],
    }
    seen: set[str] = set()
    result: dict[str, list[str]] = {}
    for name, raw_sentences in sources.items():
        kept = []
        for raw in raw_sentences:
            sentence = clean_sentence(raw, words)
            if sentence and sentence not in seen:
                seen.add(sentence)
                kept.append(sentence)
        logger.info("text source %s: %d sentences", name, len(kept))
        result[name] = kept
    return result
