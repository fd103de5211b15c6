"""Audio input: decode compressed or raw audio bytes into mono float32 at the model's rate.

Containers (WAV, FLAC, Ogg/Vorbis, Ogg/Opus, MP3, WebM/Opus, M4A/AAC, ...) are decoded with
PyAV, which bundles FFmpeg, resampled to the model's rate and averaged over channels. Raw little-endian PCM
needs its sample rate stated by the caller.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf
import torch
import torchaudio

logger = logging.getLogger(__name__)

# Leading bytes of the containers we expect; used to tell "corrupt" from "not audio we know".
_MAGIC: tuple[tuple[int, bytes], ...] = (
    (0, b"RIFF"),  # WAV
    (0, b"RF64"),
    (0, b"fLaC"),
    (0, b"OggS"),  # Ogg Vorbis / Opus / FLAC
    (0, b"ID3"),  # MP3 with ID3 tag
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (4, b"ftyp"),  # MP4 / M4A
    (0, b"FORM"),  # AIFF
    (0, b"caff"),
)


class AudioError(Exception):
    """Base class of audio input problems; ``code`` is a stable machine-readable name."""

    code = "invalid_audio"


class EmptyAudioError(AudioError):
    """The request carried no bytes."""

    code = "empty_body"


class UndecodableAudioError(AudioError):
    """The bytes look like a known container but cannot be decoded."""

    code = "undecodable_audio"


class UnsupportedFormatError(AudioError):
    """The bytes are not in a container or codec we can read."""

    code = "unsupported_format"


class AudioTooLongError(AudioError):
    """The audio is longer than the configured limit."""

    code = "audio_too_long"


class ZeroLengthAudioError(AudioError):
    """The file decodes but holds no samples."""

    code = "zero_length_audio"


@dataclass(frozen=True)
class PcmFormat:
    """Raw PCM description: sample encoding, rate and interleaved channel count."""

    sample_rate: int
    encoding: str = "s16le"  # s16le | f32le
    channels: int = 1


def decode_audio(data: bytes, target_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode a container's first audio stream to mono float32 at ``target_rate``.

    Raises an :class:`AudioError` subclass on any problem; decoding stops as soon as the
    audio exceeds ``max_seconds`` so an over-long upload costs bounded memory.
    """
    if not data:
        raise EmptyAudioError("the request body is empty")
    wav = pcm_wav_format(data)
    if wav is not None:
        fmt, start, end = wav
        return decode_pcm(memoryview(data)[start:end], fmt, target_rate, max_seconds)
    fast = _decode_with_libsndfile(data, target_rate, max_seconds)
    if fast is not None:
        return fast
    known = _looks_like_container(data)
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        if known:
            raise UndecodableAudioError("the audio data is corrupt or truncated and cannot be decoded") from exc
        raise UnsupportedFormatError(
            "unsupported audio format: send WAV, FLAC, Ogg (Vorbis/Opus), MP3, WebM/Opus or M4A/AAC, "
            "or raw PCM with a sample rate"
        ) from exc
    with container:
        if not container.streams.audio:
            raise UnsupportedFormatError("the file holds no audio stream")
        return _decode_stream(container, target_rate, max_seconds)


_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_PCM_SUBFORMAT = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def pcm_wav_format(data: bytes) -> tuple[PcmFormat, int, int] | None:
    """The format and byte range of a plain 16-bit PCM WAV file's samples, read from its header.

    Such files (the most common upload) need no decoder: their samples are the bytes. Anything
    else (other sample formats, RF64, a truncated or odd header) gives None and goes to a decoder.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, fmt = 12, None
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + size > len(data):
                return None
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40 and data[body + 24 : body + 40] == _PCM_SUBFORMAT:
                tag = _WAVE_FORMAT_PCM
            if tag != _WAVE_FORMAT_PCM or bits != 16 or channels < 1 or not 1000 <= rate <= 384000:
                return None
            fmt = PcmFormat(sample_rate=rate, encoding="s16le", channels=channels)
        elif chunk_id == b"data":
            frame_bytes = 2 * fmt.channels if fmt is not None else 0
            end = min(body + size, len(data))  # a streamed WAV may state a size it does not hold
            if fmt is None or end - body < frame_bytes:
                return None
            return fmt, body, end - (end - body) % frame_bytes
        offset = body + size + (size & 1)  # chunks are padded to even sizes
    return None


def _decode_with_libsndfile(data: bytes, target_rate: int, max_seconds: float | None) -> np.ndarray | None:
    """WAV, FLAC and Ogg Vorbis through libsndfile, many times faster than FFmpeg for WAV.

    Returns None for anything libsndfile does not read, and PyAV takes over.
    """
    if data[:4] not in (b"RIFF", b"fLaC", b"OggS"):
        return None
    try:
        with sf.SoundFile(io.BytesIO(data)) as source:
            if source.frames <= 0:
                return None  # unknown length or empty: PyAV reports it precisely
            if max_seconds is not None and source.frames > max_seconds * source.samplerate:
                raise AudioTooLongError(f"audio is longer than the limit of {max_seconds:g} s")
            samples = source.read(dtype="float32", always_2d=True)
            rate = source.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    if samples.shape[0] == 0:
        return None
    return resample(samples.mean(axis=1), rate, target_rate)


def _decode_stream(container: av.container.InputContainer, target_rate: int, max_seconds: float | None) -> np.ndarray:
    stream = container.streams.audio[0]
    # Planar float keeps the channels apart; they are averaged (FFmpeg's own downmix adds gain).
    resampler = av.AudioResampler(format="fltp", rate=target_rate)
    limit = None if max_seconds is None else int(max_seconds * target_rate)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                total = _append(chunks, out, total, limit, max_seconds)
        for out in resampler.resample(None):
            total = _append(chunks, out, total, limit, max_seconds)
    except (av.error.FFmpegError, ValueError) as exc:
        if total == 0:
            raise UndecodableAudioError("the audio data is corrupt or truncated and cannot be decoded") from exc
        # A damaged tail after valid audio: keep what decoded, as players do.
        logger.warning("audio stream ended with a decoding error after %.2f s", total / target_rate)
    if total == 0:
        raise ZeroLengthAudioError("the audio holds no samples")
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _append(
    chunks: list[np.ndarray], frame: av.AudioFrame, total: int, limit: int | None, max_seconds: float | None
) -> int:
    samples = frame.to_ndarray().mean(axis=0)  # (channels, samples) -> (samples,)
    chunks.append(samples)
    total += samples.shape[0]
    if limit is not None and total > limit:
        raise AudioTooLongError(f"audio is longer than the limit of {max_seconds:g} s")
    return total


def decode_pcm(
    data: bytes | memoryview, fmt: PcmFormat, target_rate: int, max_seconds: float | None = None
) -> np.ndarray:
    """Decode raw interleaved PCM (``s16le`` or ``f32le``) to mono float32 at ``target_rate``."""
    if not data:
        raise EmptyAudioError("the request body is empty")
    width = {"s16le": 2, "f32le": 4}.get(fmt.encoding)
    if width is None:
        raise UnsupportedFormatError(f"unsupported PCM encoding {fmt.encoding!r}: use s16le or f32le")
    if not 1000 <= fmt.sample_rate <= 384000:
        raise UnsupportedFormatError(f"sample rate {fmt.sample_rate} is outside 1000-384000 Hz")
    frame_bytes = width * fmt.channels
    if len(data) % frame_bytes:
        raise UndecodableAudioError(f"PCM length {len(data)} is not a multiple of the {frame_bytes}-byte frame")
    frames = len(data) // frame_bytes
    if max_seconds is not None and frames > max_seconds * fmt.sample_rate:
        raise AudioTooLongError(f"audio is longer than the limit of {max_seconds:g} s")
    if fmt.encoding == "s16le":
        samples = np.multiply(np.frombuffer(data, dtype="<i2"), np.float32(1 / 32768), dtype=np.float32)
    else:
        samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
    mono = samples if fmt.channels == 1 else samples.reshape(frames, fmt.channels).mean(axis=1)
    return resample(mono, fmt.sample_rate, target_rate)


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling of a mono float32 signal."""
    if source_rate == target_rate or samples.size == 0:
        return np.ascontiguousarray(samples, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    return torchaudio.functional.resample(tensor, source_rate, target_rate).numpy()


def _looks_like_container(data: bytes) -> bool:
    if any(data[offset : offset + len(magic)] == magic for offset, magic in _MAGIC):
        return True
    # MPEG audio frame sync (MP3 / ADTS AAC without tags).
    return len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0
