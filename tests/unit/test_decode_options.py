"""DecodeOptions: ranges from one place, conflicts named, and the engine's choice of decoder."""

from __future__ import annotations

from typing import Any

import pytest

from app.asr import options as ranges
from app.asr.beam import BeamDecoder, BeamOptions, BeamOptionsError
from app.asr.configs import default_config
from app.asr.ctc import GreedyDecoder
from app.asr.options import DecodeOptions, DecodeOptionsError, Hotword
from app.engine.decoders import Decoders, NoLanguageModel, NoSecondPass
from app.routers.decoding import DecodeParams, StreamDecodingIn


@pytest.mark.parametrize(
    ("field", "bounds"),
    [
        ("beam_size", ranges.BEAM_SIZE),
        ("lm_weight", ranges.LM_WEIGHT),
        ("word_score", ranges.WORD_SCORE),
        ("alternatives", ranges.ALTERNATIVES),
    ],
)
def test_every_view_takes_its_bounds_from_the_options_module(field: str, bounds: ranges.Bounds) -> None:
    for view in (DecodeParams, StreamDecodingIn):
        if field not in view.model_fields:
            continue
        limits = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in view.model_fields[field].metadata}
        assert (limits["Ge"], limits["Le"]) == (bounds.low, bounds.high), view
    too_big: dict[str, Any] = {field: bounds.high + 1}
    with pytest.raises(DecodeOptionsError, match=field) as caught:
        DecodeOptions(decoder="beam", **too_big)
    assert caught.value.param == field
    with pytest.raises(BeamOptionsError, match=field):
        BeamOptions(**too_big).validated()


def test_beam_only_options_imply_beam_and_conflict_with_other_decoders() -> None:
    assert DecodeOptions().requested is None
    assert DecodeOptions(lm_weight=0.0).requested is None  # a zero weight asks for nothing
    assert DecodeOptions.parse(hotwords=["New York:4, kubelet"]).hotwords == (
        Hotword(("new", "york"), 4.0),
        Hotword(("kubelet",), ranges.DEFAULT_HOTWORD_BOOST),
    )
    assert DecodeOptions(alternatives=3).requested == "beam"
    assert DecodeOptions.parse(hotwords=["zebra"]).requested is None  # the second pass reads them too
    with pytest.raises(DecodeOptionsError, match="word_score needs decoder=beam") as caught:
        DecodeOptions.parse(decoder="attention", hotwords=["zebra"], word_score=1.0, alternatives=2)
    assert caught.value.param == "word_score"  # BEAM_ONLY's order names the first conflict
    with pytest.raises(DecodeOptionsError, match="hotwords needs decoder=beam or attention") as caught:
        DecodeOptions.parse(decoder="greedy", hotwords=["zebra"])
    assert caught.value.param == "hotwords"
    with pytest.raises(DecodeOptionsError, match="between 0 and 30"):
        DecodeOptions.parse(hotwords=["word:99"])


class FakeLM:
    defaults = BeamOptions(beam_size=16, lm_weight=2.0)


def decoders(lm: Any = None, second_pass: bool = False, default: str = "greedy") -> Decoders:
    return Decoders(default_config("tiny"), lm, second_pass, default)


def test_the_engine_chooses_the_decoder_from_the_options_and_the_model() -> None:
    plain = decoders()
    assert plain.kinds == ["greedy"]
    assert isinstance(plain.choose(DecodeOptions()), GreedyDecoder)
    with pytest.raises(NoLanguageModel):
        plain.choose(DecodeOptions.parse(hotwords=["kubelet"]))  # implied beam
    with pytest.raises(NoSecondPass):
        plain.choose(DecodeOptions(decoder="attention"))
    with pytest.raises(NoLanguageModel):
        plain.choose(DecodeOptions(), default="beam")  # a stream's final decoder
    beam = decoders(FakeLM(), default="beam").choose(DecodeOptions(word_score=-1.0, alternatives=2))
    options = beam.options  # type: ignore[union-attr]
    assert (options.beam_size, options.lm_weight, options.word_score, options.alternatives) == (16, 2.0, -1.0, 2)


def test_partials_take_the_stream_s_beam_fields_with_a_narrower_beam_and_one_transcript() -> None:
    chosen = decoders(FakeLM()).partial("beam", DecodeOptions.parse(beam_size=64, hotwords=["kubelet"]), 8)
    options = chosen.options  # type: ignore[attr-defined]
    assert (options.beam_size, options.lm_weight, options.alternatives) == (8, 2.0, 1)
    assert [h.text for h in options.hotwords] == ["kubelet"]
    assert decoders(FakeLM()).partial("beam", DecodeOptions(), 32).options.beam_size == 16  # type: ignore[attr-defined]
    assert isinstance(decoders(FakeLM()).partial("greedy", DecodeOptions(), 8), GreedyDecoder)
    assert isinstance(decoders().partial("beam", DecodeOptions(), 8), GreedyDecoder)  # no LM


def test_the_second_pass_reads_the_prompt_then_the_hotwords() -> None:
    assert DecodeOptions().second_pass_prompt() == ""
    assert DecodeOptions(prompt=" Meeting notes. ").second_pass_prompt("Server's.") == "Meeting notes."
    assert DecodeOptions().second_pass_prompt(" Server's. ") == "Server's."
    both = DecodeOptions.parse(prompt="Meeting notes.", hotwords=["kubelet:10", "New York"])
    assert both.second_pass_prompt() == "Meeting notes. Kubelet, New York."
    assert DecodeOptions.parse(hotwords=["jayme"]).second_pass_prompt("Server's.") == "Server's. Jayme."
    default_greedy = decoders(FakeLM(), default="greedy")
    assert isinstance(default_greedy.choose(DecodeOptions.parse(hotwords=["kubelet"])), BeamDecoder)
