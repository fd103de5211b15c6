"""Decoding options of the transcription routes and streams: their request views, parsed into
:class:`~app.asr.options.DecodeOptions` (whose module holds every range; the fields here take their
bounds from it). Which decoder runs is the engine's decision, not a router's."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.asr.options import (
    ALTERNATIVES,
    BEAM_SIZE,
    DEFAULT_HOTWORD_BOOST,
    HOTWORD_BOOST,
    LM_WEIGHT,
    MAX_HOTWORDS,
    MAX_PROMPT_CHARS,
    WORD_SCORE,
    DecodeOptions,
    DecodeOptionsError,
)
from app.errors import InvalidParameter

M = TypeVar("M", bound=BaseModel)

DecoderField = Annotated[
    Literal["greedy", "beam", "attention"] | None,
    Field(
        description="`attention`: the model's second pass (Whisper's pretrained decoder; word times from CTC "
        "alignment); `beam`: CTC beam search with the bundle's language model (hotwords); `greedy`: CTC best path. "
        "Default: the server's (attention when the model has a second pass, else beam when it has a language model).",
    ),
]
BeamSizeField = Annotated[
    int | None, Field(ge=BEAM_SIZE.low, le=BEAM_SIZE.high, description="Hypotheses kept per frame (beam).")
]
LmWeightField = Annotated[
    float | None, Field(ge=LM_WEIGHT.low, le=LM_WEIGHT.high, description="Weight of the language model score (beam).")
]
WordScoreField = Annotated[
    float | None, Field(ge=WORD_SCORE.low, le=WORD_SCORE.high, description="Score added per word (beam).")
]
HotwordsField = Annotated[
    list[str],
    Field(
        description=f"Words or phrases to favour, as `phrase` or `phrase:boost` (beam search's boost "
        f"{HOTWORD_BOOST.low:g}-{HOTWORD_BOOST.high:g}, default {DEFAULT_HOTWORD_BOOST:g}; the second pass reads "
        f"the words after the prompt); repeat the field or separate with commas; at most {MAX_HOTWORDS}.",
    ),
]

PromptField = Annotated[
    str | None,
    Field(
        max_length=MAX_PROMPT_CHARS,
        description="Text that came before the audio, which the second pass (`attention`) reads first, as "
        'Whisper reads a prompt: spell names and terms there ("Jayme, kubelet.") and they come out so. '
        "Its last 128 tokens count; the CTC decoders do not read it.",
    ),
]


class DecodingFields(BaseModel):
    """The decoder, its beam fields and the second pass's prompt, shared by requests and a stream's finals."""

    decoder: DecoderField = None
    beam_size: BeamSizeField = None
    lm_weight: LmWeightField = None
    word_score: WordScoreField = None
    hotwords: HotwordsField = Field(default_factory=list)
    prompt: PromptField = None


class DecodeParams(DecodingFields):
    """How to turn the acoustic model's output into text (query parameters or multipart fields)."""

    model_config = ConfigDict(extra="ignore")

    alternatives: int = Field(
        1, ge=ALTERNATIVES.low, le=ALTERNATIVES.high, description="Return the N best transcripts (beam)."
    )
    word_timestamps: bool = Field(True, description="Include words with their times and confidences.")


class StreamDecodingIn(DecodingFields):
    """A stream config's ``decoding``: how its finals are decoded; partials decode with the server's
    partial decoder (``ASR_STREAM_PARTIAL_DECODER``), with these beam fields and hotwords when it is beam."""

    model_config = ConfigDict(extra="forbid")


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


def decode_options(params: DecodeParams | StreamDecodingIn) -> DecodeOptions:
    """The request's :class:`DecodeOptions`; a conflict (``hotwords`` with ``decoder=greedy``) raises
    :class:`InvalidParameter` (422) naming the option, a malformed hotword the options' own error (422)."""
    fields = params.model_dump()
    try:
        return DecodeOptions.parse(**fields)
    except DecodeOptionsError as exc:
        if exc.param is None:
            raise
        raise InvalidParameter(str(exc), param=exc.param) from None
