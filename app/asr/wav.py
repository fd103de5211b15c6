"""WAV headers: where a RIFF/RF64 WAVE file's audio lies, and whether the file is cut short.

Plain 16-bit PCM WAV (the most common upload) is read straight from its bytes, with no decoder;
the header walk is bounded by :data:`MAX_WAV_CHUNKS`, so it costs microseconds whatever the file
holds. Used by :func:`app.asr.audio.decode_audio` and the upload router.
"""

from __future__ import annotations

import logging
import struct

from app.asr.audio_types import DecodeReport, PcmFormat, UndecodableAudioError

logger = logging.getLogger(__name__)

MAX_WAV_CHUNKS = 64
"""Most RIFF chunks read before a WAV file's audio (real files have a handful: fmt, fact, LIST,
bext, data). A file of millions of empty chunks is refused after this many, not walked."""


_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_PCM_SUBFORMAT = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def pcm_wav_format(data: bytes) -> tuple[PcmFormat, int, int] | None:
    """The format and byte range of a plain 16-bit PCM WAV file's samples, read from its header.

    Such files (the most common upload) need no decoder: their samples are the bytes. Anything
    else (other sample formats, RF64, a truncated or odd header) gives None and goes to a decoder.
    Raises :class:`UndecodableAudioError` for a WAV file with more than :data:`MAX_WAV_CHUNKS`
    chunks before its audio, so the walk costs microseconds whatever the file holds.
    """
    layout = _wav_layout(data)
    if layout is None or data[:4] != b"RIFF":
        return None
    fmt_chunk, body, end = layout
    if fmt_chunk is None or len(fmt_chunk) < 16:
        return None
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt_chunk)
    if tag == _WAVE_FORMAT_EXTENSIBLE and len(fmt_chunk) >= 40 and fmt_chunk[24:40] == _PCM_SUBFORMAT:
        tag = _WAVE_FORMAT_PCM
    if tag != _WAVE_FORMAT_PCM or bits != 16 or channels < 1 or not 1000 <= rate <= 384000:
        return None
    frame_bytes = 2 * channels
    if end - body < frame_bytes:
        return None
    return PcmFormat(sample_rate=rate, encoding="s16le", channels=channels), body, end - (end - body) % frame_bytes


_STREAMED_WAV_SIZE = 0x7FFF0000
"""A WAV audio chunk size at or above this (or 0) is a streamer's "until the end" placeholder
(0xFFFFFFFF, 0x7FFFFFFF, sox's 0x7FFFF000), not a length the file promised."""


def wav_cut_short(data: bytes) -> bool:
    """Whether a RIFF WAV file's audio chunk states a definite size that the bytes fall short of."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    layout = _wav_layout(data)
    if layout is None:
        return False
    _, body, _ = layout
    stated = struct.unpack_from("<I", data, body - 4)[0]
    return 0 < stated < _STREAMED_WAV_SIZE and body + stated > len(data)


def check_wav_length(data: bytes, report: DecodeReport) -> None:
    """Mark ``report`` truncated (and log it) for a WAV file cut short of its stated length."""
    if wav_cut_short(data):
        report.truncated = True
        logger.warning("the WAV file holds less audio than its header states; kept what it holds")


def _wav_layout(data: bytes) -> tuple[bytes | None, int, int] | None:
    """A RIFF or RF64 WAVE file's fmt chunk (its first 40 bytes) and its data chunk's byte range.

    None when the bytes are no WAVE file or hold no data chunk; raises past :data:`MAX_WAV_CHUNKS`.
    """
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        return None
    offset, fmt = 12, None
    for _ in range(MAX_WAV_CHUNKS):
        if offset + 8 > len(data):
            return None
        chunk_id, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk_id == b"fmt ":
            fmt = bytes(data[body : body + min(size, 40)]) if body + size <= len(data) else None
        elif chunk_id == b"data":
            return fmt, body, min(body + size, len(data))  # a streamed WAV may state a size it does not hold
        offset = body + size + (size & 1)  # chunks are padded to even sizes
    raise UndecodableAudioError(f"the WAV file has more than {MAX_WAV_CHUNKS} chunks before its audio")
