"""Decoding options shared by the transcription routes: decoder choice, beam settings, hotwords."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.asr.beam import MAX_ALTERNATIVES, MAX_BEAM_SIZE, MAX_HOTWORDS, parse_hotwords
from app.engine.engine import Decoder, Engine
from app.errors import InvalidParameter

M = TypeVar("M", bound=BaseModel)

DEFAULT_HOTWORD_BOOST = 8.0
"""Log-score added per hotword word when a hotword names no boost of its own."""

_BEAM_ONLY = ("beam_size", "lm_weight", "word_score", "hotwords", "alternatives")


class DecodeParams(BaseModel):
    """How to turn the acoustic model's output into text (query parameters or multipart fields)."""

    model_config = ConfigDict(extra="ignore")

    decoder: Literal["greedy", "beam", "attention"] | None = Field(
        None,
        description="`attention`: the model's second pass (Whisper's pretrained decoder; word times from CTC "
        "alignment); `beam`: CTC beam search with the bundle's language model (hotwords); `greedy`: CTC best path. "
        "Default: the server's (attention when the model has a second pass, else beam when it has a language model).",
    )
    beam_size: int | None = Field(None, ge=1, le=MAX_BEAM_SIZE, description="Hypotheses kept per frame (beam).")
    lm_weight: float | None = Field(None, ge=0, le=10, description="Weight of the language model score (beam).")
    word_score: float | None = Field(None, ge=-20, le=20, description="Score added per word (beam).")
    hotwords: list[str] = Field(
        default_factory=list,
        description=f"Words or phrases to favour (beam), as `phrase` or `phrase:boost` (boost 0-30, default "
        f"{DEFAULT_HOTWORD_BOOST:g}); repeat the field or separate with commas; at most {MAX_HOTWORDS}.",
    )
    alternatives: int = Field(1, ge=1, le=MAX_ALTERNATIVES, description="Return the N best transcripts (beam).")
    word_timestamps: bool = Field(True, description="Include words with their times and confidences.")


def validated(model: type[M], values: dict[str, Any]) -> M:
    """``values`` as ``model``; the first bad field raises :class:`InvalidParameter` (422) naming it."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = str(first["loc"][0]) if first.get("loc") else None
        raise InvalidParameter(f"{param}: {first['msg']}", param=param) from None


def validate_params(values: dict[str, object]) -> DecodeParams:
    """Validate decoding options; a bad one raises :class:`InvalidParameter` (422) naming it."""
    return validated(DecodeParams, values)


def with_form_fields(params: DecodeParams, items: list[tuple[str, str]]) -> DecodeParams:
    """``params`` overridden by the decoding options among multipart ``items`` (repeats add hotwords)."""
    fields = [(k, v) for k, v in items if k in DecodeParams.model_fields]
    if not fields:
        return params
    values: dict[str, object] = params.model_dump(exclude_unset=True)
    hotwords = [v for k, v in fields if k == "hotwords"]
    values.update({k: v for k, v in fields if k != "hotwords"})
    if hotwords:
        values["hotwords"] = [*params.hotwords, *hotwords]
    return validate_params(values)


def choose_decoder(engine: Engine, params: DecodeParams) -> Decoder:
    """The decoder for a request: beam when asked for (or implied by a beam-only option), else the default."""
    beam_only = [name for name in _BEAM_ONLY if name in params.model_fields_set and getattr(params, name)]
    if params.alternatives == 1 and "alternatives" in beam_only:
        beam_only.remove("alternatives")
    if params.decoder in ("greedy", "attention") and beam_only:
        raise InvalidParameter(f"{beam_only[0]} needs decoder=beam", param=beam_only[0])
    kind = params.decoder or ("beam" if beam_only else None)
    if kind in ("greedy", "attention") or (kind is None and engine.default_decoder_kind != "beam") or engine.lm is None:
        return engine.decoder(kind)
    base = engine.lm.defaults
    options = replace(
        base,
        beam_size=params.beam_size or base.beam_size,
        lm_weight=base.lm_weight if params.lm_weight is None else params.lm_weight,
        word_score=base.word_score if params.word_score is None else params.word_score,
        alternatives=params.alternatives,
        hotwords=parse_hotwords(params.hotwords, DEFAULT_HOTWORD_BOOST),
    )
    return engine.decoder(kind, options.validated())
