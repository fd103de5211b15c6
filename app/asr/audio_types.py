"""The audio input's error classes and the records its decoders take and give back.

Their own module so that the container decoders (:mod:`app.asr.audio`) and the WAV header reader
(:mod:`app.asr.wav`) share them without importing each other; callers import them through
:mod:`app.asr.audio`, the audio front door.
"""

from __future__ import annotations

from dataclasses import dataclass


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


class DecodeDeadlineError(AudioError):
    """Decoding was still running when the request's deadline passed."""

    code = "deadline_exceeded"


@dataclass
class DecodeReport:
    """What decoding noticed about audio it still returned (pass one to :func:`~app.asr.audio.decode_audio`).

    ``truncated``: the file ends early, where that shows: a decoding error after valid audio (a
    damaged or cut tail), or a WAV file whose audio chunk states more bytes than it holds. The
    audio that decoded is kept, as players do. A frame-based stream (MP3, Opus) cut between
    frames is a valid shorter file and cannot be told from one.
    """

    truncated: bool = False


@dataclass(frozen=True)
class PcmFormat:
    """Raw PCM description: sample encoding, rate and interleaved channel count."""

    sample_rate: int
    encoding: str = "s16le"  # s16le | f32le
    channels: int = 1
