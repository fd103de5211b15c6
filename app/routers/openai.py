"""POST /v1/audio/transcriptions: OpenAI's transcription API, so OpenAI clients work unchanged."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app.asr.ctc import Hypothesis
from app.asr.subtitles import Segment, segment_words, to_srt, to_vtt
from app.config import Settings
from app.dependencies import get_engine, get_settings
from app.engine.engine import Engine
from app.errors import InvalidParameter, InvalidRequest, describe, sse_event
from app.metrics import Metrics
from app.routers.decoding import DecodeParams, decode_options, validated, with_form_fields
from app.routers.disconnect import unless_disconnected
from app.routers.inputs import decode_upload, multipart_openapi, read_upload
from app.routers.transcribe import ERRORS

logger = logging.getLogger(__name__)
router = APIRouter(tags=["openai"])

LANGUAGES = {"en": "english", "english": "english"}


def model_names(settings: Settings, served: str) -> list[str]:
    """The model names OpenAI clients may ask for: the served model's own, then ``ASR_MODEL_ALIASES``."""
    aliases = (name.strip() for name in settings.model_aliases.split(","))
    return list(dict.fromkeys([served, *(name for name in aliases if name)]))


# The OpenAPI description of the multipart body.
OPENAI_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": multipart_openapi(
                {
                    "model": {
                        "type": "string",
                        "description": "The served model's id or an alias (`ASR_MODEL_ALIASES`).",
                    },
                    "language": {"type": "string", "description": "`en` (the only language served)."},
                    "prompt": {
                        "type": "string",
                        "description": "Text before the audio, read first by the second pass (names, terms, style).",
                    },
                    "response_format": {"type": "string", "enum": ["json", "text", "srt", "verbose_json", "vtt"]},
                    "temperature": {"type": "number", "description": "Accepted (0-1); decoding is deterministic."},
                    "timestamp_granularities[]": {"type": "array", "items": {"enum": ["word", "segment"]}},
                    "stream": {"type": "boolean", "description": "Server-sent `transcript.text.*` events."},
                    "hotwords": {"type": "string", "description": "As for /transcribe: `phrase[:boost]`."},
                }
            )
        },
    }
}


class OpenAIForm(BaseModel):
    """The OpenAI transcription fields of a request."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, protected_namespaces=())

    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    temperature: float = Field(0.0, ge=0, le=1)
    timestamp_granularities: list[Literal["word", "segment"]] = Field(
        default_factory=list, alias="timestamp_granularities[]"
    )
    stream: bool = False


def parse_form(items: list[tuple[str, str]]) -> OpenAIForm:
    """Validate the OpenAI fields (repeated ``timestamp_granularities[]`` are collected)."""
    values: dict[str, Any] = {k: v for k, v in items if k != "timestamp_granularities[]"}
    values["timestamp_granularities[]"] = [v for k, v in items if k in ("timestamp_granularities[]",)]
    return validated(OpenAIForm, values)


def _check(form: OpenAIForm, served: str, settings: Settings) -> None:
    if form.model and form.model not in model_names(settings, served):
        message = f"model {form.model!r} is not served here; this server runs {served!r}"
        raise InvalidParameter(message, code="model_not_found", param="model")
    if form.language and form.language.lower() not in LANGUAGES:
        raise InvalidParameter(
            f"language {form.language!r} is not supported; this model transcribes English ('en')",
            code="unsupported_language",
            param="language",
        )
    if form.stream and form.response_format not in ("json", "text"):
        raise InvalidParameter("stream=true works with response_format json or text", param="stream")
    if form.timestamp_granularities and form.response_format != "verbose_json":
        raise InvalidParameter(
            "timestamp_granularities[] needs response_format=verbose_json", param="timestamp_granularities[]"
        )


@router.post(
    "/v1/audio/transcriptions",
    responses={200: {"description": "JSON, plain text, SRT, WebVTT, or a server-sent event stream."}, **ERRORS},
    openapi_extra=OPENAI_BODY_OPENAPI,
)
async def create_transcription(
    request: Request, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)
) -> Response:
    """Transcribe an uploaded file, as OpenAI's `POST /v1/audio/transcriptions` does.

    Send `multipart/form-data` with `file` and optionally `model`, `language` (`en`), `prompt`
    (read by the second pass first, as Whisper reads a prompt), `response_format` (`json`, `text`,
    `srt`, `verbose_json`, `vtt`), `temperature` (accepted), `timestamp_granularities[]` (`word`,
    `segment`; with `verbose_json`) and `stream=true` for server-sent `transcript.text.delta` /
    `transcript.text.done` events.
    The decoding options of `/transcribe` (`decoder`, `beam_size`, `hotwords`, ...) are accepted as
    extra fields. Long audio is cut into segments at pauses for `verbose_json`, `srt` and `vtt`.
    """
    admitted = engine.admit()
    config = admitted.config
    upload = await read_upload(request, settings, None)
    if upload.form is None:
        raise InvalidRequest("send multipart/form-data with the audio in the field 'file'", code="missing_file")
    form = parse_form(upload.form_items)
    _check(form, config.name, settings)
    options = decode_options(with_form_fields(DecodeParams(), upload.form_items))
    admitted.check(options)
    audio = await decode_upload(request, upload, config.sample_rate, settings)
    duration = audio.shape[0] / config.sample_rate
    if form.stream:
        pieces = admitted.transcribe_pieces(audio, options, upload.deadline)
        metrics = getattr(request.app.state, "metrics", None)
        return await _stream(pieces, duration, metrics)
    result = await unless_disconnected(request, admitted.transcribe(audio, options, upload.deadline))
    return _render(form, result.hypothesis, round(result.duration, 3))


def _render(form: OpenAIForm, hyp: Hypothesis, duration: float) -> Response:
    usage = {"type": "duration", "seconds": math.ceil(duration)}
    if form.response_format == "json":
        return JSONResponse({"text": hyp.text, "usage": usage})
    if form.response_format == "text":
        return PlainTextResponse(hyp.text + "\n")
    segments = segment_words(hyp.words)
    if form.response_format == "srt":
        return PlainTextResponse(to_srt(segments))
    if form.response_format == "vtt":
        return PlainTextResponse(to_vtt(segments), media_type="text/vtt")
    body: dict[str, Any] = {"task": "transcribe", "language": "english", "duration": duration, "text": hyp.text}
    granularities = form.timestamp_granularities or ["segment"]
    if "segment" in granularities:
        body["segments"] = [_segment_json(i, s, form.temperature) for i, s in enumerate(segments)]
    if "word" in granularities:
        body["words"] = [
            {"word": w.word, "start": w.start, "end": w.end, "probability": w.confidence} for w in hyp.words
        ]
    body["usage"] = usage
    return JSONResponse(body)


def _segment_json(index: int, segment: Segment, temperature: float) -> dict[str, Any]:
    confidence = sum(w.confidence for w in segment.words) / max(1, len(segment.words))
    return {
        "id": index,
        "seek": int(segment.start * 100),
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": [],
        "temperature": temperature,
        "avg_logprob": round(math.log(max(confidence, 1e-6)), 4),
        "compression_ratio": 1.0,
        "no_speech_prob": 0.0,
    }


async def _stream(pieces: AsyncGenerator[Hypothesis, None], duration: float, metrics: Metrics | None) -> Response:
    """Server-sent events: a delta per recognised word as each piece is decoded, then the full text.

    The first piece is awaited before answering, so a full queue or a timeout still gets its
    status code; later failures end the stream with an ``error`` event of the same type and code
    (the error table's, :mod:`app.errors`). ``pieces`` hold the upload's audio against the
    server's budget until closed: after the last event, or, for a response dropped unfinished,
    when the event loop finalizes them (asyncio closes a collected async generator).
    """
    first = await anext(pieces, None)  # a failure here ends ``pieces``, releasing the audio

    async def events() -> AsyncIterator[str]:
        words: list[str] = []
        try:
            hyp = first
            while hyp is not None:
                for word in hyp.words:
                    delta = word.word if not words else " " + word.word
                    words.append(word.word)
                    yield _sse({"type": "transcript.text.delta", "delta": delta})
                hyp = await anext(pieces, None)
        except Exception as exc:
            problem = describe(exc, "streamed transcription failed")
            problem.record(metrics)
            problem.log("streamed transcription failed")
            yield _sse(sse_event(problem))
            return
        finally:
            await pieces.aclose()
        usage = {"type": "duration", "seconds": math.ceil(duration)}
        yield _sse({"type": "transcript.text.done", "text": " ".join(words), "usage": usage})

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event)}\n\n"
