"""CTC-guided second pass: the prefix scorer equals brute-force sums over every CTC path, token
texts map onto the CTC characters, and the chooser lets the CTC head overrule the decoder."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from app.asr.whisper.ctc_prefix import CtcPrefixScorer, number_texts, spell_number, token_spellings
from app.asr.whisper.greedy import TopTokens, moves, shrink
from app.asr.whisper.joint import JointSearch, TokenTable

TOKENS = ["<blank>", " ", "'", "a", "b"]
CHAR_IDS = {t: i for i, t in enumerate(TOKENS) if i}


def collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    out: list[int] = []
    previous = -1
    for token in path:
        if token != previous and token != 0:
            out.append(token)
        previous = token
    return tuple(out)


def brute_force(log_probs: np.ndarray, labels: tuple[int, ...]) -> tuple[float, float]:
    """(log P(output starts with labels), log P(output is labels)) over every path."""
    frames, vocab = log_probs.shape
    starts, exact = 0.0, 0.0
    probs = np.exp(log_probs)
    for path in itertools.product(range(vocab), repeat=frames):
        out = collapse(path)
        p = float(np.prod(probs[np.arange(frames), path]))
        if out[: len(labels)] == labels:
            starts += p
        if out == labels:
            exact += p
    return float(np.log(starts)), float(np.log(exact)) if exact > 0 else -np.inf


@pytest.fixture
def log_probs() -> np.ndarray:
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(6, len(TOKENS))) * 2
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


@pytest.mark.parametrize("spelling", ["a", "ab", "aa", "a b", "ba a", "b'"])
def test_prefix_and_end_scores_equal_sums_over_every_path(log_probs: np.ndarray, spelling: str) -> None:
    scorer = CtcPrefixScorer(log_probs, 0, CHAR_IDS, " ")
    prefix = scorer.extend(scorer.empty(), spelling)
    labels = tuple(CHAR_IDS[c] for c in spelling)
    starts, exact = brute_force(log_probs, labels)
    assert prefix.chars == labels
    assert prefix.score == pytest.approx(starts, abs=1e-9)
    assert prefix.end_score == pytest.approx(exact, abs=1e-9)


def test_extending_token_by_token_equals_extending_at_once(log_probs: np.ndarray) -> None:
    scorer = CtcPrefixScorer(log_probs, 0, CHAR_IDS, " ")
    whole = scorer.extend(scorer.empty(), "ab a")
    pieces = scorer.empty()
    for piece in [" a", "b", ",", " ", "a"]:  # as token texts spell them: delimiters wait for a letter
        pieces = scorer.extend(pieces, token_spellings([piece], TOKENS, " ")[0] or "")
    assert pieces.chars == whole.chars
    assert pieces.score == pytest.approx(whole.score)
    assert pieces.end_score == pytest.approx(whole.end_score)


def test_extensions_are_remembered_until_forgotten(log_probs: np.ndarray) -> None:
    scorer = CtcPrefixScorer(log_probs, 0, CHAR_IDS, " ")
    ab = scorer.extend(scorer.empty(), "ab")
    again = scorer.extend(scorer.empty(), "ab a")  # passes through "ab": the same state, not a new one
    assert scorer.extend(scorer.empty(), "ab") is ab
    scorer.forget()
    fresh = scorer.extend(scorer.empty(), "ab a")
    assert fresh is not again and fresh.chars == again.chars
    assert fresh.score == again.score and fresh.end_score == again.end_score
    labels = tuple(CHAR_IDS[c] for c in "ab a")
    assert fresh.score == pytest.approx(brute_force(log_probs, labels)[0], abs=1e-9)


def test_empty_prefix_scores() -> None:
    log_probs = np.log(np.full((3, len(TOKENS)), 1 / len(TOKENS)))
    prefix = CtcPrefixScorer(log_probs, 0, CHAR_IDS, " ").empty()
    assert prefix.score == 0.0
    assert prefix.end_score == pytest.approx(3 * np.log(1 / len(TOKENS)))


def test_token_spellings() -> None:
    texts = [" Hello", ",", " don't", "-shirt", " 6", " café", " жар", "\ufffd", " I."]
    tokens = ["<blank>", " ", "'", *"abcdefghijklmnopqrstuvwxyz"]
    assert token_spellings(texts, tokens, " ") == [" hello", " ", " don't", " shirt", None, " cafe", None, None, " i "]


VOCAB = 11
END = 8


def run_search(
    search: JointSearch, decoder: dict[tuple[int, ...], dict[int, float]], vocab: int = VOCAB
) -> list[list[int]]:
    """Drive ``search`` with a decoder that gives, after each token sequence, these log-probs."""
    while not search.finished:
        logits = np.full((search.sequences, vocab), -np.inf)
        for k, beam in enumerate(search.live[0]):
            for token, log_prob in decoder[tuple(beam.tokens)].items():
                logits[k, token] = log_prob
        search.advance(TopTokens.of(logits, search.candidates, search.end_of_text))
    return search.best()


def heard(tokens: list[int]) -> np.ndarray:
    """CTC log-probs that clearly spell ``tokens``, one frame each."""
    frames = np.full((len(tokens), len(TOKENS)), -8.0)
    frames[np.arange(len(tokens)), tokens] = -0.01
    return frames


# decoder tokens 0-7 spell these; 8 is end-of-text
SPELLINGS = [None, " a", " ", " b", "b", None, None, None]  # token 2 is a comma, 5 a symbol
TABLE = TokenTable(SPELLINGS, [None] * 8, TOKENS, " ")


def test_the_ctc_head_overrules_a_decoder_that_mishears_and_ends_the_text() -> None:
    scorer = CtcPrefixScorer(heard([3, 1, 4, 0, 0, 0]), 0, CHAR_IDS, " ")  # "a b"
    decoder = {
        (): {3: 0.0, 1: -0.3, END: -2.0},  # " b" first, yet CTC hears " a"
        (1,): {1: -1.0, 3: -0.5, END: -0.2},  # would end here; CTC hears " b"
        (1, 3): {1: -0.5, 3: -0.6, END: -1.5},  # would loop on; CTC heard everything
    }
    search = JointSearch(TABLE, [scorer], END, weight=0.3, caps=[10])
    assert run_search(search, decoder) == [[1, 3]]
    plain = JointSearch(TABLE, [scorer], END, weight=0.0, caps=[10])
    assert run_search(plain, {**decoder, (3,): {END: 0.0}}) == [[3]]  # weight 0: the decoder's own choice


def test_more_beams_recover_from_a_step_that_looked_free() -> None:
    # CTC hears the word "ab"; after " a" the decoder likes "," (free for CTC) over "b"
    scorer = CtcPrefixScorer(heard([3, 0, 4, 0, 0, 0]), 0, CHAR_IDS, " ")
    decoder = {
        (): {1: 0.0, END: -5.0},
        (1,): {2: -0.2, 4: -1.0, END: -3.0},
        (1, 2): {3: -0.1, END: -0.5},
        (1, 4): {END: -0.1, 3: -3.0},
        (1, 2, 3): {END: -0.1},
    }
    greedy = run_search(JointSearch(TABLE, [scorer], END, weight=0.3, caps=[10]), decoder)
    beam = run_search(JointSearch(TABLE, [scorer], END, weight=0.3, caps=[10], beams=2), decoder)
    assert greedy[0][:2] == [1, 2]
    assert beam == [[1, 4]]


def test_a_token_the_ctc_head_cannot_spell_is_the_decoders_alone() -> None:
    frames = np.log(np.full((4, len(TOKENS)), 1 / len(TOKENS)))
    search = JointSearch(TABLE, [CtcPrefixScorer(frames, 0, CHAR_IDS, " ")], END, weight=0.5, caps=[10])
    decoder = {(): {1: -1.0, 5: -0.5}, (5,): {END: 0.0}}  # token 5 (a digit) is the decoder's choice
    assert run_search(search, decoder) == [[5]]


def test_rows_stop_at_their_caps_and_the_weight_is_checked() -> None:
    frames = heard([3, 0, 3, 0])
    scorers = [CtcPrefixScorer(frames, 0, CHAR_IDS, " ") for _ in range(2)]
    search = JointSearch(TABLE, scorers, END, weight=0.2, caps=[2, 0], beams=2)
    assert search.done == [False, True]
    while not search.finished:
        logits = np.full((search.sequences, VOCAB), -np.inf)
        logits[:, 1] = 0.0  # " a" forever
        search.advance(TopTokens.of(logits, search.candidates, search.end_of_text))
    assert search.best() == [[1, 1], []]
    for weight in (-0.1, 1.0):
        with pytest.raises(ValueError, match="CTC weight"):
            JointSearch(TABLE, scorers, END, weight, caps=[1, 1])


ALPHABET = ["<blank>", " ", "'", *"abcdefghijklmnopqrstuvwxyz"]


def test_numbers_in_digits_are_scored_as_they_are_said() -> None:
    assert spell_number(" 253", ALPHABET, " ") == " two hundred and fifty three"
    assert spell_number("825-4664", ALPHABET, " ") == " eight two five four six six four"
    texts = [" 12", " 1", " 2", ",", " won"]
    assert number_texts(texts) == [" 12", " 1", " 2", ",", None]
    char_ids = {t: i for i, t in enumerate(ALPHABET) if i}
    frames = np.full((7, len(ALPHABET)), -8.0)
    frames[np.arange(7), [char_ids[c] for c in "one two"]] = -0.01
    scorer = CtcPrefixScorer(frames, 0, char_ids, " ")
    table = TokenTable(token_spellings(texts, ALPHABET, " "), number_texts(texts), ALPHABET, " ")
    end = 5
    decoder = {
        (): {0: -0.1, 1: -0.5, 4: -2.0},  # " 12" ("twelve") first; CTC hears "one two"
        (1,): {2: -0.1, end: -3.0},
        (0,): {end: -0.1},
        (1, 2): {end: -0.1},
        (4,): {end: -0.1},
    }

    def run(weight: float) -> list[list[int]]:
        search = JointSearch(table, [scorer], end, weight, caps=[10], beams=2, candidates=4)
        return run_search(search, decoder, vocab=6)

    assert run(0.5) == [[1, 2]]
    assert run(0.0) == [[0]]


def test_a_row_in_which_the_ctc_head_hears_nothing_gets_no_tokens() -> None:
    from app.asr.configs import whisper_ctc_config
    from app.asr.whisper.joint import JointDecoding

    config = whisper_ctc_config()
    joint = JointDecoding.of(config, [" you", ".", " a"], end_of_text=3, weight=0.1, beams=2)
    silence = np.full((50, len(config.tokens)), -6.0)
    silence[:, config.blank_id] = -0.1
    speech = silence.copy()
    speech[10, config.tokens.index("a")] = 0.0
    search = joint.search([silence, speech], caps=[10, 10])
    assert search.done == [True, False]
    assert search.best()[0] == []


def test_a_batch_shrinks_by_moving_rows_from_its_end_into_the_places_freed() -> None:
    done = [False, True, False, True, False]
    assert shrink(range(5), done) == [0, 4, 2]
    assert moves(range(5), [0, 4, 2]) == [(1, 4)]
    assert shrink([0, 4, 2], [False, True, True, True, True]) == [0]
    assert moves([0, 4, 2], [0]) == []


def test_rows_that_are_done_leave_the_batch_and_the_others_read_as_alone() -> None:
    heard_texts = ([3, 0, 0], [4, 0, 1, 3, 0, 1, 4], [3, 0, 4])  # " a", " b a b", " a b"
    scorers = [CtcPrefixScorer(heard(t), 0, CHAR_IDS, " ") for t in heard_texts]
    decoders = [  # row: tokens so far -> log-probs; row 0 ends first, then row 2, then row 1
        {(): {1: -0.1, END: -3.0}, (1,): {END: -0.1, 1: -2.0}},
        {(): {3: -0.1, END: -3.0}, (3,): {1: -0.1, END: -2.0}, (3, 1): {3: -0.1, END: -2.0}, (3, 1, 3): {END: -0.1}},
        {(): {1: -0.1, END: -3.0}, (1,): {3: -0.2, END: -2.0}, (1, 3): {END: -0.1, 1: -2.0}},
    ]
    search = JointSearch(TABLE, scorers, END, weight=0.3, caps=[10, 10, 10], beams=2)
    sizes = []
    while not search.finished:
        sizes.append(search.sequences)
        logits = np.full((search.sequences, VOCAB), -np.inf)
        for place, row in enumerate(search.running):
            for k, beam in enumerate(search.live[row]):
                for token, log_prob in decoders[row].get(tuple(beam.tokens), {END: 0.0}).items():
                    logits[place * 2 + k, token] = log_prob
        search.advance(TopTokens.of(logits, search.candidates, search.end_of_text))
    assert sizes == [6, 6, 4, 2]
    alone = [
        run_search(JointSearch(TABLE, [scorer], END, weight=0.3, caps=[10], beams=2), decoders[row])
        for row, scorer in enumerate(scorers)
    ]
    assert search.best() == [a[0] for a in alone] == [[1], [3, 1, 3], [1, 3]]
