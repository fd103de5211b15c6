"""bench.nbest_rescoring: the choice by its weights, and the decoder's score of a whole text as the
decoding steps compute it (the shipped model on a real clip)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import nbest_rescoring as nb
from tests.support import cv100_clips

MODEL = Path(__file__).resolve().parents[2] / "models" / "en-whisper-tiny"


def test_a_choice_follows_its_weights_and_the_oracle_bounds_it() -> None:
    own = nb.Scored(["now", "we"], own=True, decoder=-5.0, ctc=-40.0, lm=-9.0)
    beam = nb.Scored(["now", "we", "had"], own=False, decoder=-9.0, ctc=-10.0, lm=-6.0)
    utterance = nb.Utterance("now we had", [own, beam])
    assert nb.choose(utterance, (0.1, 0.0, 0.0, 0.0, 1)) == own.words  # -8.5 against -9.1
    assert nb.choose(utterance, (0.3, 0.0, 0.0, 0.0, 1)) == beam.words  # -15.5 against -9.3
    assert nb.choose(utterance, (0.3, 0.0, 0.0, 7.0, 1)) == own.words  # the bonus: -8.5 against -9.3
    assert nb.choose(utterance, (0.1, 2.0, 0.0, 0.0, 1)) == beam.words  # the LM: -26.5 against -21.1
    assert nb.choose(utterance, (0.1, 0.0, 1.0, 0.0, 1)) == beam.words  # a word more: -6.5 against -6.1
    assert nb.choose(utterance, (0.3, 0.0, 0.0, 0.0, 0)) == own.words  # no beam text taken
    assert nb.wer([utterance], lambda u: u.candidates[0].words) == pytest.approx(100 / 3)
    assert nb.oracle([utterance]) == 0.0


def test_a_whole_text_scores_as_the_decoding_steps_score_it() -> None:
    wave, reference = cv100_clips(1)[0]
    measure = nb.Measure(MODEL, candidates=2)
    utterance = measure.utterance(wave, reference)
    own, *beam = utterance.candidates
    assert own.own and not any(c.own for c in beam) and 1 <= len(beam) <= 2
    assert all(c.decoder < 0 and c.ctc < 0 and c.lm < 0 for c in utterance.candidates)
    assert set(utterance.seconds) == {"second_pass", "beam", "scoring"}

    passes = measure.passes
    with torch.inference_mode():
        features, frames = measure.recognizer.frontend(torch.from_numpy(wave)[None], torch.tensor([wave.size]))
        states, lengths = passes.encode(features, frames)
        cross = passes.decoder.cross_keys(states)
        tokens = passes.decoder.greedy(states, lengths, passes.rules, [40])[0]
        # the same text one token at a time through the key/value cache, as the search runs
        rules, caches, total = passes.rules, None, 0.0
        inputs = torch.tensor([rules.prompt])
        for step, target in enumerate([*tokens, rules.end_of_text]):
            logits, caches = passes.decoder(inputs, caches, cross, None)
            last = logits[0, -1]
            last[list(rules.suppress)] = -torch.inf
            if step == 0:
                last[list(rules.suppress_first)] = -torch.inf
            total += float(torch.log_softmax(last, -1)[target])
            inputs = torch.tensor([[target]])
    assert tokens and nb.teacher_forced(passes, cross, tokens) == pytest.approx(total, abs=1e-3)
