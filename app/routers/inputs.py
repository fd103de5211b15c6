"""Reading audio out of an HTTP request: multipart upload or raw body, within the limits."""

from __future__ import annotations

import asyncio
import functools
import io
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import Request
from starlette.datastructures import UploadFile

from app.asr.audio import DecodeDeadlineError, DecodeReport, PcmFormat, decode_audio, decode_pcm
from app.asr.wav import check_wav_length, pcm_wav_format
from app.config import Settings
from app.engine.engine import RequestTimeout
from app.errors import InvalidRequest, UnsupportedMediaType, body_too_large

INLINE_PCM_BYTES = 2 << 20
"""Plain PCM at the model's rate up to this size (about a minute of 16 kHz mono) is converted on
the event loop: that is a copy, cheaper than handing it to a worker thread."""

PCM_TYPES = {"audio/pcm": "s16le", "audio/l16": "s16le", "audio/x-raw": "s16le", "audio/pcm-f32le": "f32le"}


def multipart_openapi(fields: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI description of a multipart upload: the audio ``file``, then ``fields``."""
    file = {"type": "string", "format": "binary", "description": "The audio file."}
    return {"schema": {"type": "object", "required": ["file"], "properties": {"file": file, **fields}}}


# The OpenAPI description of the request body: a multipart upload or raw audio bytes.
AUDIO_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": multipart_openapi({}),
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "audio/pcm": {
                "schema": {"type": "string", "format": "binary"},
                "description": "Raw 16-bit little-endian mono PCM; give its rate as `;rate=16000` or `?sample_rate=`.",
            },
        },
    }
}


_DIGITS = re.compile(r"[0-9]{1,18}")
"""A decimal count as HTTP writes it: ASCII digits only (``str.isdigit`` also takes '²' and '٣')."""


@dataclass
class AudioUpload:
    """Raw audio bytes from a request and how to interpret them.

    ``deadline`` (a ``time.monotonic()`` value) is when the request's time runs out: it starts
    when the audio has been read and covers waiting for a decode slot, decoding and inference.
    """

    data: bytes
    pcm: PcmFormat | None = None
    form: dict[str, str] | None = None
    form_items: list[tuple[str, str]] = field(default_factory=list)  # every text field, repeats kept
    deadline: float = math.inf


async def read_upload(request: Request, settings: Settings, sample_rate: int | None) -> AudioUpload:
    """Take the audio from a multipart field ``file`` or from an ``audio/*`` body; the request's
    deadline (``settings.request_timeout_s``) starts once it has been read."""
    upload = await _read_audio(request, settings, sample_rate)
    upload.deadline = time.monotonic() + settings.request_timeout_s
    return upload


async def _read_audio(request: Request, settings: Settings, sample_rate: int | None) -> AudioUpload:
    _check_declared_length(request, settings)
    content_type = request.headers.get("content-type", "")
    media_type, params = _parse_content_type(content_type)
    if media_type == "multipart/form-data":
        return await _read_multipart(request)
    if not media_type.startswith("audio/") and media_type != "application/octet-stream":
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}: send multipart/form-data with a 'file' field, "
            "or the audio itself with an audio/* Content-Type",
            code="unsupported_content_type",
        )
    data = await _read_body(request)
    if media_type in PCM_TYPES:
        rate = sample_rate or _int_param(params.get("rate"))
        if rate is None:
            raise InvalidRequest(
                f"{media_type} needs its sample rate: add ';rate=16000' to the Content-Type or '?sample_rate=16000'",
                code="missing_sample_rate",
            )
        channels = _int_param(params.get("channels")) or 1
        return AudioUpload(data, PcmFormat(sample_rate=rate, encoding=PCM_TYPES[media_type], channels=channels))
    return AudioUpload(data)


async def decode_upload(request: Request, upload: AudioUpload, target_rate: int, settings: Settings) -> np.ndarray:
    """The upload's audio as mono float32 at ``target_rate``; its bytes are released (``upload.data``
    emptied) once decoded, so a long transcription does not hold both.

    Decoding runs on a worker thread (large or compressed files must not stall the event loop),
    at most ``max_concurrent_decodes`` at once; short plain PCM at the model's rate (a raw body,
    or a 16-bit PCM WAV file's samples) is converted in place. Waiting for a decode slot and
    decoding count against the request's deadline: past it, :class:`RequestTimeout` (504).
    """
    report = DecodeReport()
    decode, inline = _decoder(upload, target_rate, settings.max_audio_seconds, report)
    if inline:
        audio = decode()
    else:
        audio = await _decode_in_slot(request.app.state.decode_slots, decode, upload.deadline, settings)
    upload.data = b""
    if report.truncated:  # the answer carries X-Audio-Truncated (app.middleware)
        request.state.audio_truncated = True
    return audio


def _decoder(
    upload: AudioUpload, target_rate: int, limit: float, report: DecodeReport
) -> tuple[Callable[[], np.ndarray], bool]:
    """The decoding call for ``upload``, and whether it is cheap enough to run on the event loop."""
    wav = pcm_wav_format(upload.data) if upload.pcm is None else None  # bounded: a few dozen chunks at most
    if wav is not None:
        check_wav_length(upload.data, report)
        fmt, start, end = wav
        data: bytes | memoryview = memoryview(upload.data)[start:end]
    elif upload.pcm is not None:
        fmt, data = upload.pcm, upload.data
    else:
        decode = functools.partial(
            decode_audio, upload.data, target_rate, limit, deadline=upload.deadline, report=report
        )
        return decode, False
    inline = len(upload.data) <= INLINE_PCM_BYTES and fmt.sample_rate == target_rate and fmt.channels == 1
    return functools.partial(decode_pcm, data, fmt, target_rate, limit, deadline=upload.deadline), inline


async def _decode_in_slot(
    slots: asyncio.Semaphore, decode: Callable[[], np.ndarray], deadline: float, settings: Settings
) -> np.ndarray:
    timeout = f"the request did not finish within {settings.request_timeout_s:g} s"
    try:
        async with asyncio.timeout_at(_loop_time(deadline)):
            await slots.acquire()
    except TimeoutError as exc:
        raise RequestTimeout(f"{timeout} (waiting to decode)") from exc
    try:
        return await asyncio.to_thread(decode)  # the decoder stops itself at the deadline
    except DecodeDeadlineError as exc:
        raise RequestTimeout(f"{timeout} (decoding)") from exc
    finally:
        slots.release()


def _loop_time(deadline: float) -> float | None:
    """A ``time.monotonic()`` instant on the event loop's clock (None: no deadline)."""
    if math.isinf(deadline):
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


async def _read_multipart(request: Request) -> AudioUpload:
    form = await request.form(max_files=1, max_fields=32)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("the multipart form needs an audio file in the field 'file'", code="missing_file")
        data = await upload.read()
        items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    finally:
        await form.close()
    return AudioUpload(data, form=dict(items), form_items=items)


async def _read_body(request: Request) -> bytes:
    """The body, gathered in one growing buffer (``getvalue`` hands it over without a copy, so a
    body costs about its own size, not twice that). Its size limit is enforced while it is read,
    by ``app.middleware.BodyLimitMiddleware``, for this and every other body."""
    body = io.BytesIO()
    async for chunk in request.stream():
        body.write(chunk)
    return body.getvalue()


def _check_declared_length(request: Request, settings: Settings) -> None:
    """A declared length past the limit answers 413 before the Content-Type is judged."""
    declared = request.headers.get("content-length")
    if declared is not None and _DIGITS.fullmatch(declared) and int(declared) > settings.max_upload_bytes:
        raise body_too_large(settings.max_upload_bytes)


def _parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    media_type, *rest = value.split(";")
    params = {}
    for item in rest:
        key, _, val = item.partition("=")
        params[key.strip().lower()] = val.strip().strip('"')
    return media_type.strip().lower(), params


def _int_param(value: str | None) -> int | None:
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        raise InvalidRequest(f"expected a positive integer, got {value!r}", code="invalid_parameter")
    return int(value)
