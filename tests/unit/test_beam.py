"""Beam search with the shipped language model, over scripted (ambiguous) acoustic log-probs."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import jiwer
import numpy as np
import pytest

from app.asr import beam
from app.asr.beam import (
    MAX_HOTWORDS,
    BeamDecoder,
    BeamOptions,
    BeamOptionsError,
    Hotword,
    LexiconLM,
    load_lexicon_lm,
    parse_hotwords,
)
from app.asr.configs import ENGLISH_CHARS
from app.asr.ctc import GreedyDecoder, Hypothesis, text_to_ids
from app.asr.segment import stitch

LM_DIR = Path(__file__).resolve().parents[2] / "models" / "en-small" / "lm"
FRAME_S = 0.04
# Letters a listener (or a small acoustic model) confuses.
CONFUSABLE = {
    "a": "e", "e": "i", "i": "e", "o": "u", "u": "o", "b": "p", "p": "b", "d": "t", "t": "d", "g": "k",
    "k": "g", "m": "n", "n": "m", "s": "z", "z": "s", "f": "v", "v": "f", "c": "k", "l": "r", "r": "l",
    "y": "i", "h": "a", "w": "v", "j": "g", "q": "k", "x": "s", "'": " ",
}  # fmt: skip
# Everyday sentences written for this test (not taken from any corpus or test set).
SENTENCES = [
    "the children walked to school in the morning",
    "please put the milk back in the fridge",
    "my sister bought a new red bicycle last week",
    "we should leave before the rain starts",
    "the old man sat quietly by the window",
    "she wrote a long letter to her friend",
    "there is a small garden behind the house",
    "the train was late again this evening",
    "he forgot his keys at the office",
    "they planted three trees near the river",
    "the dog barked at the postman all day",
    "i would like to read that book again",
]


@pytest.fixture(scope="module")
def lm() -> LexiconLM:
    loaded = load_lexicon_lm(LM_DIR, list(ENGLISH_CHARS), 0)
    assert loaded is not None, f"no language model in {LM_DIR}"
    return loaded


def emissions(text: str, rng: random.Random, confuse: float = 0.0, p_true: float = 0.5) -> np.ndarray:
    """(frames, vocab) log-probs that spell ``text``: two frames per character then a blank.

    With probability ``confuse`` a character's look-alike gets slightly more mass than the
    character itself, so best-path decoding misspells the word and only a language model can
    tell which word was said.
    """
    vocab = len(ENGLISH_CHARS)
    rows = []
    for ch in text:
        row = np.full(vocab, 0.01)
        true_id = ENGLISH_CHARS.index(ch)
        other_id = ENGLISH_CHARS.index(CONFUSABLE.get(ch, "e"))
        if rng.random() < confuse:
            row[other_id], row[true_id] = p_true, 0.8 * p_true
        else:
            row[true_id], row[other_id] = p_true, 0.8 * p_true
        rows += [row / row.sum(), row / row.sum()]
        blank = np.full(vocab, 0.01)
        blank[0] = 1.0
        rows.append(blank / blank.sum())
    return np.log(np.stack(rows)).astype(np.float32)


def greedy() -> GreedyDecoder:
    return GreedyDecoder(list(ENGLISH_CHARS), 0, FRAME_S)


def test_beam_with_lm_beats_greedy_on_a_synthetic_set(lm: LexiconLM) -> None:
    rng = random.Random(7)
    sets = [emissions(s, rng, confuse=0.25) for s in SENTENCES]
    beam = BeamDecoder(lm, lm.defaults, FRAME_S)
    greedy_texts = [greedy().decode(e).text for e in sets]
    beam_texts = [beam.decode(e).text for e in sets]
    greedy_wer = jiwer.wer(SENTENCES, greedy_texts)
    beam_wer = jiwer.wer(SENTENCES, beam_texts)
    assert greedy_wer > 0.3, greedy_texts  # the set is hard for best-path decoding
    assert beam_wer <= 0.5 * greedy_wer, (beam_wer, greedy_wer, beam_texts)


def test_clean_input_decodes_exactly_with_word_times(lm: LexiconLM) -> None:
    text = "the train was late again"
    e = emissions(text, random.Random(0))
    hyp = BeamDecoder(lm, BeamOptions(), FRAME_S).decode(e, time_offset=2.0)
    assert hyp.text == text
    assert [w.word for w in hyp.words] == text.split()
    # "the" is spelled on frames 0-7 (t, h, e at three frames each, blanks between).
    assert hyp.words[0].start == pytest.approx(2.0) and hyp.words[0].end == pytest.approx(2.0 + 8 * FRAME_S)
    for before, after in zip(hyp.words, hyp.words[1:], strict=False):
        assert before.start < before.end <= after.start < after.end
    # Confidences come from the acoustic probabilities along the path, as greedy's do.
    assert [w.confidence for w in hyp.words] == [w.confidence for w in greedy().decode(e, 2.0).words]
    assert all(0.3 < w.confidence <= 1 for w in hyp.words)
    assert hyp.score is not None


def test_alternatives_are_distinct_and_ranked(lm: LexiconLM) -> None:
    e = emissions("he read the note", random.Random(1), confuse=0.3, p_true=0.45)
    hyp = BeamDecoder(lm, BeamOptions(alternatives=5), FRAME_S).decode(e)
    texts = [a.text for a in hyp.alternatives]
    assert 2 <= len(texts) <= 5 and len(set(texts)) == len(texts)
    assert texts[0] == hyp.text
    scores = [a.score for a in hyp.alternatives]
    assert scores == sorted(scores, reverse=True)


def test_a_sentence_scores_above_its_words_shuffled_or_misspelled(lm: LexiconLM) -> None:
    words = SENTENCES[0].split()
    score = lm.sentence_score(words)
    assert score < 0 and score > lm.sentence_score(words[::-1])
    assert score > lm.sentence_score([*words[:-1], "mornxng"])  # <unk>
    assert lm.sentence_score([]) < 0  # an empty sentence still ends


def test_word_piece_models_search_the_same_lexicon_spelled_in_their_pieces() -> None:
    tokens = [*ENGLISH_CHARS, "th", "the", "er", "ing", "ain", "tr"]
    pieces = load_lexicon_lm(LM_DIR, tokens, 0)
    assert pieces is not None
    spelled = pieces.spellings[pieces.word_index["the"]]
    assert [tokens[i] for i in spelled] == ["the", " "]
    text = "the train was late again this evening"
    ids = text_to_ids(text, tokens)
    assert len(ids) < len(text)  # pieces, not characters
    rows = []
    for token in ids:
        row = np.full(len(tokens), 0.01)
        row[token] = 1.0
        blank = np.full(len(tokens), 0.01)
        blank[0] = 1.0
        rows += [row / row.sum(), row / row.sum(), blank / blank.sum()]
    hyp = BeamDecoder(pieces, BeamOptions(), FRAME_S).decode(np.log(np.stack(rows)).astype(np.float32))
    assert hyp.text == text
    assert [w.word for w in hyp.words] == text.split()


def test_hotword_missing_from_the_lexicon_is_recognised(lm: LexiconLM) -> None:
    word = "kubelet"
    assert word not in lm.word_index
    e = emissions(f"restart the {word} now", random.Random(3), confuse=0.2)
    plain = BeamDecoder(lm, lm.defaults, FRAME_S).decode(e)
    assert word not in plain.text.split()
    options = BeamOptions(lm_weight=lm.defaults.lm_weight, hotwords=parse_hotwords([word], 8.0))
    boosted = BeamDecoder(lm, options, FRAME_S).decode(e)
    assert boosted.text == f"restart the {word} now"


def test_hotword_turns_a_likelier_word_into_the_rare_one_said(lm: LexiconLM) -> None:
    said = "we talked about the vole"
    # The sound of vo?e's third letter is as much 't' as 'l': the LM prefers the common "vote".
    e = _two_way(emissions(said, random.Random(0)), said.index("vole") + 2, "l", "t")
    plain = BeamDecoder(lm, lm.defaults, FRAME_S).decode(e)
    assert plain.text == "we talked about the vote"
    options = BeamOptions(lm_weight=lm.defaults.lm_weight, hotwords=(Hotword(("vole",), 8.0),))
    assert BeamDecoder(lm, options, FRAME_S).decode(e).text == said


def test_hotword_trie_carries_the_boost_in_its_look_ahead_and_is_cached(lm: LexiconLM) -> None:
    word = "vole"
    prefix = lm.spell(word)[:3]  # "vol": a rare word's prefix is pruned early unless it looks promising
    options = BeamOptions(lm_weight=1.5, hotwords=parse_hotwords([word], 6.0))
    search = lm.search_for(options)
    unigram = lm.unigrams[lm.word_index[word]]
    assert search.trie.search(prefix).max_score == pytest.approx(max(unigram + 6.0 / 1.5, _best_below(lm, "vol")))
    assert lm.base_trie.search(prefix).max_score == pytest.approx(_best_below(lm, "vol"))
    assert lm.search_for(options).trie is search.trie  # built once per hotword set
    assert lm.search_for(BeamOptions(lm_weight=1.5)).trie is lm.base_trie


def _best_below(lm: LexiconLM, prefix: str) -> float:
    return max(u for w, u in zip(lm.words, lm.unigrams, strict=True) if w.startswith(prefix))


def _two_way(e: np.ndarray, char_index: int, first: str, second: str) -> np.ndarray:
    """Make character ``char_index`` sound exactly as much like ``first`` as like ``second``."""
    e = e.copy()
    row = np.full(e.shape[1], 0.01)
    row[ENGLISH_CHARS.index(first)] = row[ENGLISH_CHARS.index(second)] = 0.45
    for frame in (3 * char_index, 3 * char_index + 1):
        e[frame] = np.log(row / row.sum())
    return e


def test_stepwise_search_equals_one_shot_and_threads_agree(lm: LexiconLM, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    sets = [emissions(" ".join(SENTENCES[i : i + 3]), rng, confuse=0.2) for i in range(0, 9, 3)]
    decoder = BeamDecoder(lm, BeamOptions(hotwords=parse_hotwords(["zebra"], 5.0)), FRAME_S)
    expected = [decoder.decode(e) for e in sets]
    assert min(e.shape[0] for e in sets) > 2 * beam.STEP_FRAMES  # several search steps
    with monkeypatch.context() as patch:
        patch.setattr(beam, "STEP_FRAMES", 10**6)
        assert [decoder.decode(e) for e in sets] == expected
    expected_texts = [h.text for h in expected]
    results: dict[int, list[str]] = {}

    def work(worker: int) -> None:
        results[worker] = [decoder.decode(e).text for e in sets for _ in range(2)][::2]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(texts == expected_texts for texts in results.values())


def test_options_are_validated() -> None:
    with pytest.raises(BeamOptionsError, match="beam_size"):
        BeamOptions(beam_size=0).validated()
    with pytest.raises(BeamOptionsError, match="alternatives"):
        BeamOptions(alternatives=11).validated()
    with pytest.raises(BeamOptionsError, match="at most"):
        parse_hotwords([",".join(f"w{i}" for i in range(MAX_HOTWORDS + 1))], 5.0)
    with pytest.raises(BeamOptionsError, match="boost"):
        parse_hotwords(["word:abc"], 5.0)
    with pytest.raises(BeamOptionsError, match="boost"):
        parse_hotwords(["word:99"], 5.0)
    assert parse_hotwords(["New York:4, kubelet", ""], 5.0) == (
        Hotword(("new", "york"), 4.0),
        Hotword(("kubelet",), 5.0),
    )


def test_stitch_keeps_scores_and_joins_alternatives() -> None:
    from app.asr.ctc import Alternative

    a = Hypothesis("a", score=-1.0, alternatives=[Alternative("a", -1.0), Alternative("b", -2.0)])
    b = Hypothesis("c", score=-3.0, alternatives=[Alternative("c", -3.0)])
    joined = stitch([a, b], [0.0, 10.0])
    assert joined.score == -4.0
    assert [(x.text, x.score) for x in joined.alternatives] == [("a c", -4.0), ("b c", -5.0)]
