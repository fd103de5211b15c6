"""Read the general English trigram model that ships inside the ``pocketsphinx`` package
(``model/en-us/en-us.lm.bin``: CMU Sphinx's US English LM, 72,547 words, BSD-style licence) into a
:class:`~train.lm.backoff.BackoffLM`.

The file is CMU Sphinx's binary trie (``ngram_model_trie.c`` and ``lm_trie.c`` of pocketsphinx 5):
the text ``Trie Language Model``, the order (u8) and one u32 count per order; a u32 and the
quantiser's tables (65,536 float32 centres each: bigram probabilities, bigram backoffs, trigram
probabilities); the unigrams (float32 probability, float32 backoff, u32 index of their first bigram;
one sentinel more than the count); then the bigram and trigram arrays, bit-packed little-endian
records (bigrams: word index, 16-bit backoff bin, 16-bit probability bin, index of the first
trigram; trigrams: word index, 16-bit probability bin); and last the words, NUL-separated after a
u32 byte count. The trie is reversed, as KenLM's: a unigram's bigrams hold the word *before* it.
Probabilities are natural-log multiples of log(1.0001) (Sphinx's log base); ARPA's log10 is
``value * log10(1.0001)``.

pocketsphinx's own ARPA writer cannot convert this file: its header counts 2,051,547 bigrams where
the trie holds 2,051,541, so the writer crashes (pocketsphinx issue 502). This reader walks the
trie's own pointers and takes the counts from there.
"""

from __future__ import annotations

import hashlib
import math
import struct
from importlib import metadata
from pathlib import Path

import numpy as np

from train.lm.backoff import BackoffLM

HEADER = b"Trie Language Model"
BINS = 1 << 16
LOG10_BASE = math.log10(1.0001)
PACKAGE = "pocketsphinx"


def packaged_lm() -> Path:
    """The installed pocketsphinx package's English LM file."""
    import pocketsphinx  # a bench/LM-build dependency only, never imported by app/

    return Path(pocketsphinx.__file__).parent / "model" / "en-us" / "en-us.lm.bin"


def provenance(path: Path) -> dict[str, str]:
    """Package, version and sha256 of the base LM, for the LM's card."""
    return {
        "package": PACKAGE,
        "version": metadata.version(PACKAGE),
        "file": "model/en-us/en-us.lm.bin",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def _bits(max_value: int) -> int:
    return int(max_value).bit_length()


def _read_fields(buf: np.ndarray, offsets: np.ndarray, mask: int) -> np.ndarray:
    """The little-endian bit fields that start at ``offsets`` (bits) of ``buf``, masked."""
    first = offsets >> 3
    value = np.zeros(len(offsets), dtype=np.uint64)
    for i in range(8):
        value |= buf[first + i].astype(np.uint64) << np.uint64(8 * i)
    return ((value >> (offsets & 7).astype(np.uint64)) & np.uint64(mask)).astype(np.int64)


def read_sphinx_trie(path: Path) -> BackoffLM:
    data = path.read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path}: not a CMU Sphinx trie LM")
    pos = len(HEADER)
    order = data[pos]
    pos += 1
    if order != 3:
        raise ValueError(f"{path}: order {order}; only trigram models are read")
    counts = struct.unpack_from(f"<{order}I", data, pos)
    pos += 4 * order + 4  # the counts, then an unused u32
    bins = np.frombuffer(data, dtype="<f4", count=3 * BINS, offset=pos).astype(np.float64) * LOG10_BASE
    pos += 3 * BINS * 4
    bigram_prob_bins, bigram_backoff_bins, trigram_prob_bins = bins[:BINS], bins[BINS : 2 * BINS], bins[2 * BINS :]
    unigram_type = np.dtype([("prob", "<f4"), ("backoff", "<f4"), ("next", "<u4")])
    unigrams = np.frombuffer(data, dtype=unigram_type, count=counts[0] + 1, offset=pos)
    pos += (counts[0] + 1) * unigram_type.itemsize

    word_bits = _bits(counts[0])
    next_bits = _bits(counts[2])
    bigram_bits = word_bits + 32 + next_bits
    trigram_bits = word_bits + 16
    bigram_bytes = ((1 + counts[1]) * bigram_bits + 7) // 8 + 8
    trigram_bytes = ((1 + counts[2]) * trigram_bits + 7) // 8 + 8
    bigram_mem = np.frombuffer(data, dtype=np.uint8, count=bigram_bytes, offset=pos)
    pos += bigram_bytes
    trigram_mem = np.frombuffer(data, dtype=np.uint8, count=trigram_bytes, offset=pos)
    pos += trigram_bytes
    (text_bytes,) = struct.unpack_from("<i", data, pos)
    pos += 4
    words = [w.decode("utf-8") for w in data[pos : pos + text_bytes].split(b"\0")[: counts[0]]]
    if len(words) != counts[0]:
        raise ValueError(f"{path}: {len(words)} words for {counts[0]} unigrams")

    bigram_start = unigrams["next"].astype(np.int64)
    n_bigrams = int(bigram_start[-1])
    at = np.arange(n_bigrams + 1, dtype=np.int64) * bigram_bits
    bigram_word = _read_fields(bigram_mem, at, (1 << word_bits) - 1)
    packed = _read_fields(bigram_mem, at + word_bits, (1 << 32) - 1)
    trigram_start = _read_fields(bigram_mem, at + word_bits + 32, (1 << next_bits) - 1)
    bigram_last = np.repeat(np.arange(counts[0]), np.diff(bigram_start))
    n_trigrams = int(trigram_start[n_bigrams])
    at = np.arange(n_trigrams, dtype=np.int64) * trigram_bits
    trigram_word = _read_fields(trigram_mem, at, (1 << word_bits) - 1)
    trigram_prob = trigram_prob_bins[_read_fields(trigram_mem, at + word_bits, BINS - 1)]
    trigram_bigram = np.repeat(np.arange(n_bigrams), np.diff(trigram_start))

    lm = BackoffLM(3)
    for i, word in enumerate(words):
        lm.prob[1][(word,)] = float(unigrams["prob"][i]) * LOG10_BASE
        lm.backoff[1][(word,)] = float(unigrams["backoff"][i]) * LOG10_BASE
    bigram_prob = bigram_prob_bins[packed[:n_bigrams] >> 16]
    bigram_backoff = bigram_backoff_bins[packed[:n_bigrams] & (BINS - 1)]
    bigrams = [
        (words[a], words[b]) for a, b in zip(bigram_word[:n_bigrams].tolist(), bigram_last.tolist(), strict=True)
    ]
    lm.prob[2] = dict(zip(bigrams, bigram_prob.tolist(), strict=True))
    lm.backoff[2] = dict(zip(bigrams, bigram_backoff.tolist(), strict=True))
    lm.prob[3] = {
        (words[w], *bigrams[b]): p
        for w, b, p in zip(trigram_word.tolist(), trigram_bigram.tolist(), trigram_prob.tolist(), strict=True)
    }
    return lm
