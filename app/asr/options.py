"""How one request wants its audio decoded: :class:`DecodeOptions`, and the ranges of its fields.

The ranges live here and nowhere else: beam search (:mod:`app.asr.beam`) checks its settings
against them, and the routers' request models take their bounds from them. Building a
:class:`DecodeOptions` validates it (raising :class:`DecodeOptionsError`, which names the bad
field in ``param`` where there is one); which decoder then runs is the engine's decision
(:mod:`app.engine.decoders`), from these options and what the served model has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from app.asr.text import normalize_text

DecoderKind = Literal["greedy", "beam", "attention"]
DECODER_KINDS: tuple[DecoderKind, ...] = ("greedy", "beam", "attention")


@dataclass(frozen=True)
class Bounds:
    """An inclusive range of a numeric option."""

    low: float
    high: float

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"between {self.low:g} and {self.high:g}"


BEAM_SIZE = Bounds(1, 256)  # hypotheses kept per frame
LM_WEIGHT = Bounds(0, 10)  # weight of the language model's score
WORD_SCORE = Bounds(-20, 20)  # score added per word
ALTERNATIVES = Bounds(1, 10)  # n-best transcripts returned
HOTWORD_BOOST = Bounds(0, 30)  # log-score added per hotword word
MAX_BEAM_SIZE = int(BEAM_SIZE.high)
MAX_ALTERNATIVES = int(ALTERNATIVES.high)
MAX_BOOST = HOTWORD_BOOST.high
MAX_HOTWORDS = 100
MAX_HOTWORD_CHARS = 64
HOTWORDS_CONFLICT = "hotwords needs decoder=beam or attention (greedy decoding reads none)"
MAX_PROMPT_CHARS = 1000
"""Longest ``prompt`` a request may give (the second pass reads its last 128 tokens)."""
DEFAULT_HOTWORD_BOOST = 8.0
"""Log-score added per hotword word when a hotword names no boost of its own."""

BEAM_ONLY = ("beam_size", "lm_weight", "word_score", "alternatives")
"""The options only beam search reads: giving one implies ``decoder=beam``. Hotwords are read by
beam search (as boosts) and by the second pass (in its prompt), not by greedy decoding."""


class DecodeOptionsError(ValueError):
    """A decoding option is out of range, malformed, or does not fit the decoder asked for."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Hotword:
    """A word or phrase to favour, and the log-score added per word of it."""

    words: tuple[str, ...]
    boost: float

    @property
    def text(self) -> str:
        return " ".join(self.words)


def parse_hotwords(items: Iterable[str], default_boost: float = DEFAULT_HOTWORD_BOOST) -> tuple[Hotword, ...]:
    """Hotwords from ``"phrase"`` or ``"phrase:boost"`` items (each may hold several, comma-separated)."""
    parsed: list[Hotword] = []
    for item in (part for raw in items for part in raw.split(",")):
        if not item.strip():
            continue
        phrase, sep, boost_text = item.rpartition(":")
        if not sep:
            phrase, boost_text = item, ""
        try:
            boost = float(boost_text) if boost_text.strip() else default_boost
        except ValueError:
            raise DecodeOptionsError(f"hotword {item.strip()!r}: the boost after ':' must be a number") from None
        if not HOTWORD_BOOST.holds(boost):
            raise DecodeOptionsError(f"hotword {item.strip()!r}: boost must be {HOTWORD_BOOST}")
        text = normalize_text(phrase)
        if not text or len(text) > MAX_HOTWORD_CHARS:
            raise DecodeOptionsError(f"hotword {phrase.strip()!r} must have 1 to {MAX_HOTWORD_CHARS} letters")
        parsed.append(Hotword(tuple(text.split()), boost))
        if len(parsed) > MAX_HOTWORDS:
            raise DecodeOptionsError(f"at most {MAX_HOTWORDS} hotwords are allowed")
    return tuple(parsed)


@dataclass(frozen=True)
class DecodeOptions:
    """A request's decoding choices; None (or the default) leaves a choice to the server.

    ``decoder``: greedy, beam or attention (the second pass); None: the server's default, or beam
    when a beam-only option (:data:`BEAM_ONLY`) is given. Beam fields left None take the language
    model's tuned values. ``prompt``: text the second pass reads as what came before the audio
    (names, terms, style); the CTC decoders do not read it. ``hotwords``: boosts of beam search, and
    words the second pass reads after the prompt (:meth:`second_pass_prompt`).
    """

    decoder: DecoderKind | None = None
    beam_size: int | None = None
    lm_weight: float | None = None
    word_score: float | None = None
    hotwords: tuple[Hotword, ...] = ()
    alternatives: int = 1
    word_timestamps: bool = True
    prompt: str = ""

    def __post_init__(self) -> None:
        checks: list[tuple[str, float | None, Bounds]] = [
            ("beam_size", self.beam_size, BEAM_SIZE),
            ("lm_weight", self.lm_weight, LM_WEIGHT),
            ("word_score", self.word_score, WORD_SCORE),
            ("alternatives", self.alternatives, ALTERNATIVES),
        ]
        for name, value, bounds in checks:
            if value is not None and not bounds.holds(value):
                raise DecodeOptionsError(f"{name} must be {bounds}", param=name)
        if self.decoder is not None and self.decoder not in DECODER_KINDS:
            raise DecodeOptionsError(f"decoder must be one of {', '.join(DECODER_KINDS)}", param="decoder")
        if len(self.hotwords) > MAX_HOTWORDS:
            raise DecodeOptionsError(f"at most {MAX_HOTWORDS} hotwords are allowed")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise DecodeOptionsError(f"prompt must be at most {MAX_PROMPT_CHARS} characters", param="prompt")
        beam_only = self.beam_only
        if self.decoder in ("greedy", "attention") and beam_only:
            raise DecodeOptionsError(f"{beam_only[0]} needs decoder=beam", param=beam_only[0])
        if self.decoder == "greedy" and self.hotwords:
            raise DecodeOptionsError(HOTWORDS_CONFLICT, param="hotwords")

    @classmethod
    def parse(
        cls,
        decoder: DecoderKind | None = None,
        beam_size: int | None = None,
        lm_weight: float | None = None,
        word_score: float | None = None,
        hotwords: Iterable[str] = (),
        alternatives: int = 1,
        word_timestamps: bool = True,
        prompt: str | None = None,
    ) -> DecodeOptions:
        """Options from request fields, hotwords as ``phrase[:boost]`` texts (checked for the
        decoder first, so ``hotwords`` with ``decoder=greedy`` names the conflict, not the words)."""
        texts = [text for text in hotwords if text.strip()]
        given = _beam_only(beam_size, lm_weight, word_score, alternatives)
        if decoder in ("greedy", "attention") and given:
            raise DecodeOptionsError(f"{given[0]} needs decoder=beam", param=given[0])
        if decoder == "greedy" and texts:
            raise DecodeOptionsError(HOTWORDS_CONFLICT, param="hotwords")
        parsed = parse_hotwords(texts)
        return cls(decoder, beam_size, lm_weight, word_score, parsed, alternatives, word_timestamps, prompt or "")

    @property
    def beam_only(self) -> list[str]:
        """The beam-only options this request sets (an ``alternatives`` of 1 is no request)."""
        return _beam_only(self.beam_size, self.lm_weight, self.word_score, self.alternatives)

    @property
    def requested(self) -> DecoderKind | None:
        """The decoder asked for, named or implied by a beam-only option; None: the server's choice."""
        return self.decoder or ("beam" if self.beam_only else None)

    def second_pass_prompt(self, default: str = "") -> str:
        """What the second pass reads before the audio: the prompt (or, without one, the server's
        ``default``), then the hotwords as a list, each word capitalised as a name is
        (``"Meeting notes. Kubelet, New York."``: Whisper takes a name up more often written so)."""
        words = ", ".join(" ".join(w[:1].upper() + w[1:] for w in hotword.words) for hotword in self.hotwords)
        prompt = self.prompt.strip() or default.strip()
        return " ".join(part for part in (prompt, f"{words}." if words else "") if part)


def _beam_only(
    beam_size: int | None, lm_weight: float | None, word_score: float | None, alternatives: int
) -> list[str]:
    """The beam-only options set, in :data:`BEAM_ONLY`'s order (a zero weight or score and one
    alternative set nothing)."""
    values = {
        "beam_size": beam_size,
        "lm_weight": lm_weight,
        "word_score": word_score,
        "alternatives": alternatives != 1,
    }
    return [name for name in BEAM_ONLY if values[name]]
