"""CTC beam search with a KenLM word language model, a lexicon, and per-request hotwords.

The search is Flashlight's lexicon decoder (``flashlight-text``, the engine behind torchaudio's
``ctc_decoder``): hypotheses walk a trie of the lexicon's spellings, and every finished word is
scored by the n-gram model. Total score = acoustic log-prob + ``lm_weight`` x LM log10-prob +
``word_score`` per word (+ a hotword's ``boost`` per hotword word).

Sharing: a :class:`LexiconLM` (the KenLM model, word list and lexicon trie) is loaded once and
only read afterwards, so any thread may use it. Each :meth:`BeamDecoder.decode` builds its own
Flashlight decoder (cheap) whose search state lives only for that call.

Hotwords: each word of a hotword phrase gets ``boost`` added whenever a hypothesis ends it (the
LM is scored through a small Python wrapper that adds it, which costs some speed; requests
without hotwords run entirely in C++). A hotword set also needs its own lexicon trie: one whose
look-ahead scores carry the boost, so that a rare hotword's first letters are not pruned before
the word ends, and which spells the hotwords the lexicon lacks. It is built on the first request
with that set (about half a second and 1 KB per lexicon word: 105 MB for the shipped 102k-word
lexicons) and kept in a small cache sized by memory (:data:`TRIE_CACHE_BYTES`); one trie is
built at a time, so the hotword tries alive number at most the cache's size plus the decodes
running with an evicted one.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from flashlight.lib.text.decoder import (
    LM,
    CriterionType,
    LexiconDecoder,
    LexiconDecoderOptions,
    LMState,
    SmearingMode,
    Trie,
)
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from app.asr.ctc import Alternative, Hypothesis, decode_path, spell, spelling_index
from app.asr.options import (
    ALTERNATIVES,
    BEAM_SIZE,
    LM_WEIGHT,
    MAX_HOTWORDS,
    WORD_SCORE,
    DecodeOptions,
    DecodeOptionsError,
    Hotword,
)
from app.asr.options import parse_hotwords as parse_hotwords  # re-exported: hotwords are beam search's

logger = logging.getLogger(__name__)

LM_FILE = "lm.bin"
LEXICON_FILE = "lexicon.txt"
DEFAULTS_FILE = "decoder.json"
UNK = "<unk>"
STEP_FRAMES = 100  # frames per decode_step call: the GIL is released between steps

TRIE_CACHE_BYTES = 256 * 2**20  # memory for the hotword tries kept for repeated hotword sets
TRIE_BYTES_PER_WORD = 1100  # a lexicon trie's size per word (measured: 105 MB for 102,279 words)


BeamOptionsError = DecodeOptionsError
"""A beam search option out of range or malformed: the decoding options' error, under its beam name."""


@dataclass(frozen=True)
class BeamOptions:
    """Search settings of one request; defaults come from the LM folder's ``decoder.json``."""

    beam_size: int = 32
    beam_size_token: int = 12
    beam_threshold: float = 20.0
    lm_weight: float = 1.0
    word_score: float = 1.0
    alternatives: int = 1
    hotwords: tuple[Hotword, ...] = ()

    def validated(self) -> BeamOptions:
        """Return self, or raise :class:`BeamOptionsError` naming the first bad option (the ranges
        are :mod:`app.asr.options`')."""
        checks = [
            (BEAM_SIZE.holds(self.beam_size), f"beam_size must be {BEAM_SIZE}"),
            (self.beam_size_token >= 1, "beam_size_token must be at least 1"),
            (self.beam_threshold > 0, "beam_threshold must be positive"),
            (LM_WEIGHT.holds(self.lm_weight), f"lm_weight must be {LM_WEIGHT}"),
            (WORD_SCORE.holds(self.word_score), f"word_score must be {WORD_SCORE}"),
            (ALTERNATIVES.holds(self.alternatives), f"alternatives must be {ALTERNATIVES}"),
            (len(self.hotwords) <= MAX_HOTWORDS, f"at most {MAX_HOTWORDS} hotwords are allowed"),
        ]
        for ok, message in checks:
            if not ok:
                raise BeamOptionsError(message)
        return self

    def for_request(self, options: DecodeOptions) -> BeamOptions:
        """These settings (the LM's tuned ones) with a request's beam fields where it gives them."""
        return replace(
            self,
            beam_size=options.beam_size or self.beam_size,
            lm_weight=self.lm_weight if options.lm_weight is None else options.lm_weight,
            word_score=self.word_score if options.word_score is None else options.word_score,
            alternatives=options.alternatives,
            hotwords=options.hotwords,
        ).validated()


class _BoostedLM(LM):
    """KenLM scores times ``scale``, plus a bonus for hotword ids; ids past the LM's words score as <unk>."""

    def __init__(self, base: Any, lm_words: int, unk: int, scale: float, bonus: dict[int, float]) -> None:
        LM.__init__(self)
        self.base, self.lm_words, self.unk, self.scale, self.bonus = base, lm_words, unk, scale, bonus

    def start(self, start_with_nothing: bool) -> LMState:
        return self.base.start(start_with_nothing)

    def score(self, state: LMState, word: int) -> tuple[LMState, float]:
        next_state, score = self.base.score(state, word if word < self.lm_words else self.unk)
        return next_state, self.scale * score + self.bonus.get(word, 0.0)

    def finish(self, state: LMState) -> tuple[LMState, float]:
        next_state, score = self.base.finish(state)
        return next_state, self.scale * score


@dataclass
class _Search:
    """What one decode needs: a trie, an LM, the decoder's LM weight and the id -> word map."""

    trie: Any
    lm: Any
    lm_weight: float
    words: list[str]
    keep: list[object] = field(default_factory=list)  # Python objects the C++ side points to


class LexiconLM:
    """A KenLM model with its lexicon, loaded once and shared read-only by every decoder.

    Args:
        folder: holds ``lm.bin`` (KenLM binary or ARPA), ``lexicon.txt`` (one word a line;
            anything after a tab is ignored: each word is spelled with the model's own tokens, so
            word pieces need no other lexicon)
            and optionally ``decoder.json`` (default :class:`BeamOptions` fields).
        tokens: the acoustic model's token list; ``delimiter`` separates words, ``blank_id`` is CTC's blank.
    """

    def __init__(self, folder: Path, tokens: list[str], blank_id: int, delimiter: str = " ") -> None:
        self.folder = folder
        self.tokens = tokens
        self.blank_id = blank_id
        self.delimiter_id = tokens.index(delimiter)
        self.index, self.longest = spelling_index(tokens)
        self.words, self.spellings = self._read_lexicon(folder / LEXICON_FILE)
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.unk = len(self.words)
        self.kenlm = KenLM(str(folder / LM_FILE), Dictionary([*self.words, UNK]))
        start = self.kenlm.start(False)
        self.unigrams = [self.kenlm.score(start, i)[1] for i in range(len(self.words))]
        self.unk_unigram = self.kenlm.score(start, self.unk)[1]
        self.defaults = _read_defaults(folder / DEFAULTS_FILE)
        self.base_trie = self._trie(1.0, {}, [])
        self._cache: OrderedDict[tuple[object, ...], Any] = OrderedDict()  # hotword tries
        self.cache_size = max(1, TRIE_CACHE_BYTES // (TRIE_BYTES_PER_WORD * len(self.words)))
        self._lock = threading.Lock()  # one trie is built at a time
        logger.info("language model %s: %d lexicon words", folder, len(self.words))

    def spell(self, word: str) -> list[int] | None:
        """Token ids of ``word`` (as training spelled it) and the delimiter; None if a letter is not a token."""
        ids = spell(word, self.index, self.longest)
        return None if not ids else [*ids, self.delimiter_id]

    def sentence_score(self, words: list[str]) -> float:
        """The LM's score of ``words`` as a whole sentence (from the sentence's start to its end;
        ``<unk>`` for a word outside the lexicon), in the units the beam search weighs by ``lm_weight``."""
        state, total = self.kenlm.start(False), 0.0
        for word in words:
            state, score = self.kenlm.score(state, self.word_index.get(word, self.unk))
            total += score
        return total + self.kenlm.finish(state)[1]

    def _read_lexicon(self, path: Path) -> tuple[list[str], list[list[int]]]:
        words, spellings = [], []
        for line in path.read_text(encoding="utf-8").splitlines():
            word = line.partition("\t")[0]
            spelled = self.spell(word)
            if spelled is not None:
                words.append(word)
                spellings.append(spelled)
        if not words:
            raise ValueError(f"{path}: no usable lexicon entries")
        return words, spellings

    def search_for(self, options: BeamOptions) -> _Search:
        """The trie and LM for ``options``: the shared ones, or for hotwords a boosting LM wrapper
        and a trie with the hotwords' boost in its look-ahead (built once per hotword set)."""
        if not options.hotwords:
            return _Search(self.base_trie, self.kenlm, options.lm_weight, self.words)
        # The decoder multiplies LM scores by its weight; bonuses are divided by it to stay as asked.
        scale, weight = (1.0, options.lm_weight) if options.lm_weight > 0 else (0.0, 1.0)
        bonus, extra = self._hotword_ids(options.hotwords, weight)
        lm = _BoostedLM(self.kenlm, self.unk + 1, self.unk, scale, bonus)
        words = [*self.words, UNK, *(w for w, _ in extra)]
        trie = self._cached_trie(scale, bonus, extra)
        return _Search(trie, lm, weight, words, keep=[lm])

    def _hotword_ids(
        self, hotwords: tuple[Hotword, ...], weight: float
    ) -> tuple[dict[int, float], list[tuple[str, list[int]]]]:
        """Bonus (in LM units) per word id, and the hotword words missing from the lexicon."""
        bonus: dict[int, float] = {}
        extra: list[tuple[str, list[int]]] = []
        for hotword in hotwords:
            for word in hotword.words:
                idx = self.word_index.get(word)
                if idx is None:
                    known = [i for i, (w, _) in enumerate(extra) if w == word]
                    spelling = self.spell(word)
                    if spelling is None:
                        continue
                    idx = len(self.words) + 1 + (known[0] if known else len(extra))  # ids after <unk>
                    if not known:
                        extra.append((word, spelling))
                bonus[idx] = max(bonus.get(idx, 0.0), hotword.boost / weight)
        return bonus, extra

    def _cached_trie(self, scale: float, bonus: dict[int, float], extra: list[tuple[str, list[int]]]) -> Any:
        """The hotword set's trie; on a miss the oldest is dropped before the new one is built."""
        key = (scale, tuple(sorted(bonus.items())), tuple(w for w, _ in extra))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            while len(self._cache) >= self.cache_size:
                self._cache.popitem(last=False)
            ids = [(len(self.words) + 1 + i, spelling) for i, (_, spelling) in enumerate(extra)]
            trie = self._cache[key] = self._trie(scale, bonus, ids)
            return trie

    def _trie(self, weight: float, bonus: dict[int, float], extra: list[tuple[int, list[int]]]) -> Any:
        """The lexicon trie; look-ahead scores are ``weight`` x unigram (+ bonus) in LM units."""
        trie = Trie(len(self.tokens), self.delimiter_id)
        for idx, (spelling, unigram) in enumerate(zip(self.spellings, self.unigrams, strict=True)):
            trie.insert(spelling, idx, weight * unigram + bonus.get(idx, 0.0))
        for idx, spelling in extra:
            trie.insert(spelling, idx, weight * self.unk_unigram + bonus.get(idx, 0.0))
        trie.smear(SmearingMode.MAX)
        return trie


def _read_defaults(path: Path) -> BeamOptions:
    if not path.is_file():
        return BeamOptions()
    raw = json.loads(path.read_text())
    names = ("beam_size", "beam_size_token", "beam_threshold", "lm_weight", "word_score")
    known = {k: raw[k] for k in names if k in raw}
    return replace(BeamOptions(), **known).validated()


def load_lexicon_lm(folder: Path, tokens: list[str], blank_id: int, delimiter: str = " ") -> LexiconLM | None:
    """The LM in ``folder``, or None when the folder has no ``lm.bin`` and ``lexicon.txt``."""
    if not ((folder / LM_FILE).is_file() and (folder / LEXICON_FILE).is_file()):
        return None
    return LexiconLM(folder, tokens, blank_id, delimiter)


class BeamDecoder:
    """Beam search over one utterance's (frames, vocab) log-probs with a :class:`LexiconLM`."""

    def __init__(self, lm: LexiconLM, options: BeamOptions, frame_seconds: float) -> None:
        self.lm = lm
        self.options = options.validated()
        self.frame_seconds = frame_seconds

    def decode(self, log_probs: np.ndarray, time_offset: float = 0.0) -> Hypothesis:
        """log_probs: (frames, vocab) float log-probabilities of one utterance (no padding)."""
        vocab = len(self.lm.tokens)
        if log_probs.ndim != 2 or log_probs.shape[1] != vocab:
            raise ValueError(f"log_probs must be (frames, {vocab}), got {log_probs.shape}")
        emissions = np.ascontiguousarray(log_probs, dtype=np.float32)
        frames = emissions.shape[0]
        if frames == 0:
            return Hypothesis(text="", score=0.0)
        search = self.lm.search_for(self.options)
        results = self._search(search, emissions)
        if not results:
            return Hypothesis(text="", score=0.0)
        best = results[0]
        path = list(best.tokens)[1 : frames + 1]  # the decoder pads one silence frame at each end
        probs = np.exp(emissions[np.arange(frames), path]).tolist()
        lm = self.lm
        hyp = decode_path(path, probs, lm.tokens, lm.blank_id, lm.delimiter_id, self.frame_seconds, time_offset)
        hyp.score = round(float(best.score), 4)
        if self.options.alternatives > 1:
            hyp.alternatives = _alternatives(results, search.words, self.options.alternatives)
        return hyp

    def _search(self, search: _Search, emissions: np.ndarray) -> list[Any]:
        o = self.options
        options = LexiconDecoderOptions(
            beam_size=o.beam_size,
            beam_size_token=min(o.beam_size_token, emissions.shape[1]),
            beam_threshold=o.beam_threshold,
            lm_weight=search.lm_weight,
            word_score=o.word_score,
            unk_score=float("-inf"),
            sil_score=0.0,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        lm = self.lm
        decoder = LexiconDecoder(options, search.trie, search.lm, lm.delimiter_id, lm.blank_id, lm.unk, [], False)
        frames, vocab = emissions.shape
        base = emissions.ctypes.data
        decoder.decode_begin()
        for start in range(0, frames, STEP_FRAMES):
            decoder.decode_step(base + start * vocab * 4, min(STEP_FRAMES, frames - start), vocab)
        decoder.decode_end()
        return list(decoder.get_all_final_hypothesis())


def _alternatives(results: list[Any], words: list[str], limit: int) -> list[Alternative]:
    seen: set[str] = set()
    out = []
    for result in results:
        text = " ".join(words[i] for i in result.words if 0 <= i < len(words))
        if text not in seen:
            seen.add(text)
            out.append(Alternative(text=text, score=round(float(result.score), 4)))
        if len(out) == limit:
            break
    return out
