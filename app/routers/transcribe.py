"""POST /transcribe: one audio file in, its transcript with word times out."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from app.config import Settings
from app.dependencies import get_engine, get_settings
from app.engine.engine import Engine
from app.routers.decoding import DecodeParams, decode_options, with_form_fields
from app.routers.disconnect import unless_disconnected
from app.routers.inputs import AUDIO_BODY_OPENAPI, decode_upload, read_upload
from app.schemas import AlternativeOut, ErrorResponse, TranscriptionResponse, WordOut

router = APIRouter(tags=["transcription"])

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Empty, corrupt or zero-length audio, or a missing parameter.",
        413: "Body larger than the upload limit, or audio longer than the duration limit.",
        415: "Not an audio format the server reads.",
        422: "Invalid query parameter or decoding option (the error's `param` names it).",
        429: "The server is at capacity; retry after the Retry-After header's seconds.",
        503: "The model is not ready yet, or the server is shutting down.",
        504: "Transcription did not finish within the request deadline.",
    }.items()
}


@router.post(
    "/transcribe",
    response_model=TranscriptionResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=AUDIO_BODY_OPENAPI,
)
async def transcribe(
    request: Request,
    params: Annotated[DecodeParams, Query()],
    sample_rate: int | None = Query(None, ge=1000, le=384000, description="Sample rate of raw PCM bodies, in Hz."),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> TranscriptionResponse:
    """Transcribe one recording.

    Send the audio either as `multipart/form-data` with the field `file`, or as the raw request
    body with its `audio/*` Content-Type. WAV, FLAC, Ogg (Vorbis, Opus), MP3, WebM/Opus and M4A/AAC
    are read; raw 16-bit little-endian PCM is sent as `audio/pcm` or `audio/l16` with its rate
    (`audio/pcm;rate=16000` or `?sample_rate=16000`). Any sample rate and channel count is accepted.

    Decoding options (`decoder`, `beam_size`, `lm_weight`, `word_score`, `hotwords`, `alternatives`,
    `word_timestamps`) go in the query string or, with multipart uploads, as form fields. Hotwords
    favour words the model would otherwise miss: `?hotwords=kubernetes:10&hotwords=new york`.
    """
    started = time.perf_counter()
    admitted = engine.admit()
    config = admitted.config
    upload = await read_upload(request, settings, sample_rate)
    options = decode_options(with_form_fields(params, upload.form_items))
    admitted.check(options)
    audio = await decode_upload(request, upload, config.sample_rate, settings)
    result = await unless_disconnected(request, admitted.transcribe(audio, options, upload.deadline))
    hyp = result.hypothesis
    words = hyp.words if options.word_timestamps else []
    return TranscriptionResponse(
        text=hyp.text,
        duration=round(result.duration, 3),
        words=[WordOut(word=w.word, start=w.start, end=w.end, confidence=w.confidence) for w in words],
        model=config.name,
        processing_ms=round((time.perf_counter() - started) * 1000, 2),
        alternatives=[AlternativeOut(text=a.text, score=a.score) for a in hyp.alternatives]
        if options.alternatives > 1
        else None,
    )
