"""Which decoder runs for a request: the one place that turns :class:`~app.asr.options.DecodeOptions`
and what the served model has (a language model, a second pass) into a decoder.

The choice: the decoder the options name, or beam when they set a beam-only option, or else the
server's default (``ASR_DECODER`` resolved in the serving plan), but beam where that default is
greedy and the options give hotwords (the second pass reads hotwords in its prompt). Beam search takes the language
model's tuned settings with the request's beam fields over them. A stream's partials decode as the
serving plan's ``stream_partial_decoder`` says, with a narrower beam (``ASR_STREAM_PARTIAL_BEAM_SIZE``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import numpy as np

from app.asr.align import AlignedDecoder
from app.asr.beam import BeamDecoder, LexiconLM
from app.asr.configs import BundleConfig
from app.asr.ctc import GreedyDecoder, Hypothesis
from app.asr.options import DecodeOptions, DecoderKind


class CTCDecoder(Protocol):
    """Turns one piece's (frames, vocab) log-probs into a hypothesis."""

    def decode(self, log_probs: np.ndarray, time_offset: float = 0.0) -> Hypothesis: ...


Decoder = CTCDecoder | AlignedDecoder
"""A request's decoder: a CTC decoder (greedy, beam) or the second pass's aligner."""


class NoLanguageModel(Exception):
    """Beam search was asked for, but the served bundle has no language model."""


class NoSecondPass(Exception):
    """The second pass (``decoder=attention``) was asked for, but the served model has none."""


class Decoders:
    """The decoders the served model offers, and the choice among them for a request."""

    def __init__(self, config: BundleConfig, lm: LexiconLM | None, second_pass: bool, default: str) -> None:
        self.config = config
        self.lm = lm
        self.second_pass = second_pass
        self.default = default
        self.greedy = GreedyDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)

    @property
    def kinds(self) -> list[DecoderKind]:
        """The decoders a request may choose."""
        kinds: list[DecoderKind] = ["greedy"]
        if self.lm is not None:
            kinds.append("beam")
        if self.second_pass:
            kinds.append("attention")
        return kinds

    def choose(self, options: DecodeOptions, default: str | None = None) -> Decoder:
        """The decoder for ``options`` (``default`` overrides the server's default kind).

        Raises :class:`NoLanguageModel` for beam without an LM and :class:`NoSecondPass` for
        attention on a model without one.
        """
        kind = options.requested or default or self.default
        if kind == "greedy" and options.hotwords:  # a default that reads no hotwords: beam search does
            kind = "beam"
        config = self.config
        if kind == "greedy":
            return self.greedy
        if kind == "attention":
            if not self.second_pass:
                raise NoSecondPass(f"decoder=attention needs a second pass, and model {config.name} has none")
            return AlignedDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)
        if self.lm is None:
            raise NoLanguageModel(f"beam search needs a language model, and model {config.name} has none")
        return BeamDecoder(self.lm, self.lm.defaults.for_request(options), config.frame_seconds)

    def partial(self, kind: str, options: DecodeOptions, max_beam_size: int) -> CTCDecoder:
        """The decoder of a stream's partials: greedy, or (``kind`` beam) beam search with the
        stream's beam fields and hotwords, its beam at most ``max_beam_size`` and one transcript,
        since every partial decodes the utterance so far."""
        if kind == "greedy" or self.lm is None:
            return self.greedy
        settings = self.lm.defaults.for_request(options)
        narrow = replace(settings, beam_size=min(settings.beam_size, max_beam_size), alternatives=1)
        return BeamDecoder(self.lm, narrow, self.config.frame_seconds)
