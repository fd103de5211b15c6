"""Audio input: decode compressed or raw audio bytes into mono float32 at the model's rate.

Containers (WAV, FLAC, Ogg/Vorbis, Ogg/Opus, MP3, WebM/Opus, M4A/AAC, ...) are decoded with
libsndfile (WAV, FLAC, Ogg) or PyAV, which bundles FFmpeg; raw little-endian PCM needs its sample
rate stated by the caller, and goes through the PCM decoder live streams use
(:class:`~app.asr.incremental.PcmStream`). Every path decodes block by block: each block is
averaged over its channels, resampled to the model's rate by the tree's one resampler
(:class:`~app.asr.resample.Resampler`, which keeps its state between blocks), and appended to the
output, which holds at most ``max_seconds`` of audio at the model's rate. Decoding stops the
moment that budget is passed, so a small file that decodes to hours (an "audio bomb") costs no
more memory than the longest audio accepted. The whole file is never held at its own rate and
channel count. Plain 16-bit PCM WAV skips the decoders: its header (:mod:`app.asr.wav`) says where
its samples lie.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Iterator

import av
import numpy as np
import soundfile as sf

from app.asr.audio_types import (
    AudioError,
    AudioTooLongError,
    DecodeDeadlineError,
    DecodeReport,
    EmptyAudioError,
    PcmFormat,
    UndecodableAudioError,
    UnsupportedFormatError,
    ZeroLengthAudioError,
)
from app.asr.incremental import PcmStream
from app.asr.resample import Resampler
from app.asr.wav import check_wav_length, pcm_wav_format

__all__ = [  # the audio front door: its error classes and records live in app.asr.audio_types
    "AudioError",
    "AudioTooLongError",
    "DecodeDeadlineError",
    "DecodeReport",
    "DecodedAudio",
    "EmptyAudioError",
    "PcmFormat",
    "UndecodableAudioError",
    "UnsupportedFormatError",
    "ZeroLengthAudioError",
    "decode_audio",
    "decode_pcm",
]

logger = logging.getLogger(__name__)

BLOCK_FRAMES = 1 << 16
"""Source frames decoded, downmixed and resampled at a time (about 1.4 s at 48 kHz)."""

SEGMENT_SAMPLES = 1 << 23
"""Output buffer added when audio runs past its expected length (524 s at 16 kHz, 32 MiB: large
enough that the C allocator maps it on its own, touched page by page and unmapped when freed)."""

RESAMPLER_SLACK = 64
"""Samples a resampler may round up over the exact length; the duration limit allows them."""

_UNKNOWN_FRAMES = 1 << 62  # libsndfile's frame count of a stream of unknown length is near 2**63

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


class DecodedAudio:
    """Mono float32 samples at the target rate, appended block by block within a budget.

    Raises :class:`AudioTooLongError` as soon as an append takes the audio past ``max_seconds``,
    and :class:`DecodeDeadlineError` once ``deadline`` (a ``time.monotonic()`` value) has passed.
    ``expected`` (samples at the target rate, when the source tells its length) sizes the first
    buffer (never beyond the budget); audio past it goes into further buffers of
    :data:`SEGMENT_SAMPLES`, so nothing is copied while decoding and a bomb holds at most its
    budget when it is stopped.
    """

    def __init__(self, rate: int, max_seconds: float | None, deadline: float | None = None, expected: int = 0) -> None:
        self.rate = rate
        self.max_seconds = max_seconds
        self.limit = None if max_seconds is None else math.ceil(max_seconds * rate) + RESAMPLER_SLACK
        self.deadline = deadline
        self.size = 0
        first = min(expected or SEGMENT_SAMPLES, self.limit or 600 * rate)  # a header may overstate the length
        self._full: list[np.ndarray] = []
        self._segment = np.empty(first, dtype=np.float32)
        self._used = 0  # samples in ``_segment``

    def append(self, samples: np.ndarray) -> None:
        """Add a block of (samples,) float32; raises when past the budget or the deadline."""
        end = self.size + int(samples.shape[0])
        if self.limit is not None and end > self.limit:
            raise AudioTooLongError(f"audio is longer than the limit of {self.max_seconds:g} s")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DecodeDeadlineError("decoding did not finish within the request deadline")
        if not np.isfinite(samples).all():
            raise UndecodableAudioError("the audio holds NaN or infinite samples")
        while samples.shape[0]:
            if self._used == self._segment.shape[0]:
                self._full.append(self._segment)
                self._segment, self._used = np.empty(SEGMENT_SAMPLES, dtype=np.float32), 0
            take = min(samples.shape[0], self._segment.shape[0] - self._used)
            self._segment[self._used : self._used + take] = samples[:take]
            self._used += take
            samples = samples[take:]
        self.size = end

    def result(self) -> np.ndarray:
        """The (samples,) decoded; raises :class:`ZeroLengthAudioError` if there are none."""
        if self.size == 0:
            raise ZeroLengthAudioError("the audio holds no samples")
        last = self._segment[: self._used]
        if not self._full:
            return last.copy() if self._segment.shape[0] - self._used > self._used // 4 else last
        joined, start = np.empty(self.size, dtype=np.float32), 0
        while self._full:  # each buffer is freed once copied: the join costs one buffer, not a second copy
            part = self._full.pop(0)
            joined[start : start + part.shape[0]] = part
            start += part.shape[0]
            del part
        joined[start:] = last
        return joined


def decode_audio(
    data: bytes,
    target_rate: int,
    max_seconds: float | None = None,
    *,
    deadline: float | None = None,
    report: DecodeReport | None = None,
) -> np.ndarray:
    """Decode a container's first audio stream to mono float32 at ``target_rate``.

    Raises an :class:`AudioError` subclass on any problem; decoding stops as soon as the
    audio exceeds ``max_seconds`` (or ``deadline``, a ``time.monotonic()`` value, passes), so
    any upload costs bounded memory and time. A file that ends early keeps what decoded and is
    marked in ``report`` (see :class:`DecodeReport`).
    """
    if not data:
        raise EmptyAudioError("the request body is empty")
    report = report if report is not None else DecodeReport()
    check_wav_length(data, report)
    wav = pcm_wav_format(data)
    if wav is not None:
        fmt, start, end = wav
        return decode_pcm(memoryview(data)[start:end], fmt, target_rate, max_seconds, deadline=deadline)
    fast = _decode_with_libsndfile(data, target_rate, max_seconds, deadline)
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
        out = DecodedAudio(target_rate, max_seconds, deadline, _stated(container, target_rate))
        return _decode_stream(container, out, report)


def _decode_with_libsndfile(
    data: bytes, target_rate: int, max_seconds: float | None, deadline: float | None
) -> np.ndarray | None:
    """WAV, FLAC and Ogg (Vorbis, Opus) through libsndfile, many times faster than FFmpeg for WAV.

    Returns None for anything libsndfile does not read, and PyAV takes over.
    """
    if data[:4] not in (b"RIFF", b"RF64", b"fLaC", b"OggS"):
        return None
    try:
        with sf.SoundFile(io.BytesIO(data)) as source:
            rate, channels, frames = source.samplerate, source.channels, source.frames
            if frames <= 0:
                return None  # empty: PyAV reports it precisely
            known = frames < _UNKNOWN_FRAMES  # a FLAC stream may not state its length
            if known and max_seconds is not None and frames > max_seconds * rate:
                raise AudioTooLongError(f"audio is longer than the limit of {max_seconds:g} s")
            out = DecodedAudio(target_rate, max_seconds, deadline, _expected(frames, rate, target_rate) if known else 0)
            _resample_into(out, _libsndfile_blocks(source, channels), rate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    return out.result() if out.size else None


def _libsndfile_blocks(source: sf.SoundFile, channels: int) -> Iterator[np.ndarray]:
    block = np.empty((BLOCK_FRAMES, channels), dtype=np.float32)  # reused: one block in memory
    while True:
        read = source.read(out=block)
        if read.shape[0] == 0:
            return
        yield read[:, 0] if channels == 1 else read.mean(axis=1, dtype=np.float32)


def _stated(container: av.container.InputContainer, target_rate: int) -> int:
    """Samples at ``target_rate`` of the length the container states (0 if none): a size hint only."""
    stream = container.streams.audio[0]
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        return 0
    return _expected(math.ceil(max(seconds, 0.0) * target_rate), target_rate, target_rate) if seconds < 1e7 else 0


def _decode_stream(container: av.container.InputContainer, out: DecodedAudio, report: DecodeReport) -> np.ndarray:
    stream = container.streams.audio[0]
    resampler: Resampler | None = None  # made at the first frame's rate (a header may not state it)
    try:
        for frame in container.decode(stream):
            resampler = resampler or Resampler(frame.sample_rate, out.rate)
            out.append(resampler.push_frame(frame))
        if resampler is not None:
            out.append(resampler.flush())
    except (av.error.FFmpegError, ValueError) as exc:
        if out.size == 0:
            raise UndecodableAudioError("the audio data is corrupt or truncated and cannot be decoded") from exc
        # A damaged tail after valid audio: keep what decoded, as players do, and say so.
        report.truncated = True
        logger.warning("audio stream ended with a decoding error after %.2f s; kept what decoded", out.size / out.rate)
    return out.result()


def decode_pcm(
    data: bytes | memoryview,
    fmt: PcmFormat,
    target_rate: int,
    max_seconds: float | None = None,
    *,
    deadline: float | None = None,
) -> np.ndarray:
    """Decode raw interleaved PCM (``s16le`` or ``f32le``) to mono float32 at ``target_rate``.

    Mono PCM at ``target_rate`` is one conversion; anything else goes block by block.
    """
    if not data:
        raise EmptyAudioError("the request body is empty")
    width = {"s16le": 2, "f32le": 4}.get(fmt.encoding)
    if width is None:
        raise UnsupportedFormatError(f"unsupported PCM encoding {fmt.encoding!r}: use s16le or f32le")
    if not 1000 <= fmt.sample_rate <= 384000:
        raise UnsupportedFormatError(f"sample rate {fmt.sample_rate} is outside 1000-384000 Hz")
    if not 1 <= fmt.channels <= 64:
        raise UnsupportedFormatError(f"{fmt.channels} channels: PCM may have 1 to 64")
    frame_bytes = width * fmt.channels
    if len(data) % frame_bytes:
        raise UndecodableAudioError(f"PCM length {len(data)} is not a multiple of the {frame_bytes}-byte frame")
    frames = len(data) // frame_bytes
    if max_seconds is not None and frames > max_seconds * fmt.sample_rate:
        raise AudioTooLongError(f"audio is longer than the limit of {max_seconds:g} s")
    stream = PcmStream(f"pcm_{fmt.encoding}", fmt.sample_rate, target_rate, fmt.channels)
    if fmt.channels == 1 and fmt.sample_rate == target_rate:  # the samples are the bytes: one conversion
        samples = stream.decode(data)
        if fmt.encoding == "f32le" and not np.isfinite(samples).all():
            raise UndecodableAudioError("the audio holds NaN or infinite samples")
        return samples
    out = DecodedAudio(target_rate, max_seconds, deadline, _expected(frames, fmt.sample_rate, target_rate))
    step = BLOCK_FRAMES * frame_bytes
    for start in range(0, len(data), step):
        out.append(stream.decode(data[start : start + step]))
    out.append(stream.flush())
    return out.result()


def _resample_into(out: DecodedAudio, blocks: Iterator[np.ndarray], source_rate: int) -> None:
    """Append mono float32 ``blocks`` at ``source_rate`` to ``out``, resampled block by block."""
    resampler = Resampler(source_rate, out.rate)
    for block in blocks:
        out.append(resampler.push(block))
    out.append(resampler.flush())


def _expected(frames: int, source_rate: int, target_rate: int) -> int:
    """Samples at ``target_rate`` of ``frames`` at ``source_rate``, with the resampler's slack."""
    return -(-frames * target_rate // source_rate) + RESAMPLER_SLACK


def _looks_like_container(data: bytes) -> bool:
    if any(data[offset : offset + len(magic)] == magic for offset, magic in _MAGIC):
        return True
    # MPEG audio frame sync (MP3 / ADTS AAC without tags).
    return len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0
