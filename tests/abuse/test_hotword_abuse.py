"""Hotword sets that change with every request: the tries they cost stay within the cache's bound."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil

from app.asr.beam import TRIE_BYTES_PER_WORD, TRIE_CACHE_BYTES, BeamOptions, load_lexicon_lm, parse_hotwords

MODEL = Path(__file__).resolve().parents[2] / "models" / "en-whisper-tiny"  # the default model


def test_a_new_hotword_set_per_request_keeps_memory_bounded() -> None:
    config = json.loads((MODEL / "config.json").read_text())
    lm = load_lexicon_lm(MODEL / "lm", config["tokens"], config["blank_id"], config["word_delimiter"])
    assert lm is not None
    assert lm.cache_size == 2 == TRIE_CACHE_BYTES // (TRIE_BYTES_PER_WORD * len(lm.words))
    process = psutil.Process()
    loaded = process.memory_info().rss

    def hotword_set(i: int) -> BeamOptions:
        return BeamOptions(hotwords=parse_hotwords([f"zorb{'abcdefgh'[i]}"], 5.0))

    searches = [lm.search_for(hotword_set(i)).trie for i in range(lm.cache_size)]  # the cache is full
    del searches
    full = process.memory_info().rss
    started = time.perf_counter()
    for i in range(lm.cache_size, lm.cache_size + 3):
        lm.search_for(hotword_set(i))
    per_set = (time.perf_counter() - started) / 3
    grown_mb = (process.memory_info().rss - full) / 2**20
    held_mb = (process.memory_info().rss - loaded) / 2**20
    print(f"{len(lm.words)} words; {per_set:.2f} s per new set; tries held: {held_mb:.0f} MB; +{grown_mb:.0f} MB")
    assert len(lm._cache) == lm.cache_size
    # Each trie is ~105 MB: three more sets held would add ~315 MB.
    assert grown_mb < 60, f"RSS grew by {grown_mb:.0f} MB over three new hotword sets"
    newest = lm.search_for(hotword_set(lm.cache_size + 2)).trie
    assert lm.search_for(hotword_set(lm.cache_size + 2)).trie is newest  # still cached
