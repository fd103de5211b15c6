"""CTC greedy decoding: collapse, word times, confidences, batches."""

from __future__ import annotations

import pytest
import torch

from app.asr.configs import ENGLISH_CHARS
from app.asr.ctc import ctc_collapse, greedy_decode, text_to_ids

BLANK = 0


def path_log_probs(paths: list[list[str]], prob: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs whose best path spells each row's frame tokens ('_' is blank)."""
    frames = max(len(p) for p in paths)
    lp = torch.full((len(paths), frames, len(ENGLISH_CHARS)), (1 - prob) / (len(ENGLISH_CHARS) - 1))
    for row, path in enumerate(paths):
        for t, ch in enumerate(path):
            lp[row, t, ENGLISH_CHARS.index(ch) if ch != "_" else BLANK] = prob
    return lp.log(), torch.tensor([len(p) for p in paths])


def test_collapse_merges_repeats_and_drops_blanks() -> None:
    assert ctc_collapse([0, 3, 3, 0, 3, 4, 4, 0], blank_id=0) == [3, 3, 4]


def test_words_times_and_confidence() -> None:
    lp, lengths = path_log_probs([list("_hhi__ _yo_u_")])
    (hyp,) = greedy_decode(lp, lengths, ENGLISH_CHARS, BLANK, frame_seconds=0.04)
    assert hyp.text == "hi you"
    (hi, you) = hyp.words
    assert (hi.word, hi.start, hi.end) == ("hi", pytest.approx(0.04), pytest.approx(0.16))
    assert (you.word, you.start, you.end) == ("you", pytest.approx(0.32), pytest.approx(0.48))
    assert hi.confidence == pytest.approx(0.8, abs=1e-4)


def test_batch_respects_lengths_and_offset() -> None:
    lp, lengths = path_log_probs([list("a_b"), list("c__")])
    lengths[0] = 1  # only the first frame of row 0 counts
    first, second = greedy_decode(lp, lengths, ENGLISH_CHARS, BLANK, 0.04, time_offset=10.0)
    assert first.text == "a" and second.text == "c"
    assert second.words[0].start == pytest.approx(10.0)


def test_repeated_letters_need_a_blank() -> None:
    lp, lengths = path_log_probs([list("hel_lo"), list("hello")])
    double, single = greedy_decode(lp, lengths, ENGLISH_CHARS, BLANK, 0.04)
    assert double.text == "hello" and single.text == "helo"


def test_shape_checks() -> None:
    with pytest.raises(ValueError, match="batch, frames, vocab"):
        greedy_decode(torch.zeros(3, 29), torch.tensor([3]), ENGLISH_CHARS, BLANK, 0.04)
    with pytest.raises(ValueError, match="5 classes"):
        greedy_decode(torch.zeros(1, 3, 5), torch.tensor([3]), ENGLISH_CHARS, BLANK, 0.04)


def test_text_to_ids() -> None:
    assert text_to_ids("a b", ENGLISH_CHARS) == [3, 1, 4]
    with pytest.raises(ValueError, match="'7' is not in the vocabulary"):
        text_to_ids("a7", ENGLISH_CHARS)


def test_word_pieces_spell_with_the_longest_piece_first_and_decode_back_to_words() -> None:
    tokens = [*ENGLISH_CHARS, "th", "the", "ing", "in"]
    ids = text_to_ids("the thing is", tokens)
    assert [tokens[i] for i in ids] == ["the", " ", "th", "ing", " ", "i", "s"]
    path = [x for i in ids for x in (i, BLANK)]  # one frame per token, a blank after each
    log_probs = torch.full((1, len(path), len(tokens)), -20.0)
    log_probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    hyp = greedy_decode(log_probs, torch.tensor([len(path)]), tokens, BLANK, 0.02)[0]
    assert hyp.text == "the thing is"
    assert [w.word for w in hyp.words] == ["the", "thing", "is"]
    assert hyp.words[1].start == pytest.approx(4 * 0.02) and hyp.words[1].end == pytest.approx(7 * 0.02)
