"""Windowed inference for live audio: which audio to run, and which output frames are final.

The acoustic model is convolutional with 'same' padding and masks padding, and the features are
not centred, so a window of audio that starts on the model's frame grid (``hop * stride``
samples) gives the same output frames as the whole utterance wherever the window holds each
frame's receptive field (``ModelConfig.receptive_field``). An :class:`Utterance` therefore runs
windows that keep enough left context, and *commits* an output frame once its right context lies
inside the window; the frames after it are provisional (computed as if the audio ended there).
The utterance's last window is treated like the end of an offline utterance, so the committed
frames equal the offline log-probs of the same audio, at a cost per window of the context plus
the new audio, not of the whole utterance.

A grid may cap the context below the receptive field (``max_context_s``): windows then cost
less, and committed frames are close to, not equal to, the offline ones. Live streams do this
for their partials and run their finals over the utterance's whole audio instead.

Shapes: audio is ``(samples,)`` float32 at the model's rate; log-probs are ``(frames, vocab)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

import numpy as np

from app.asr.configs import BundleConfig, ModelConfig
from app.asr.resample import Resampler
from app.asr.vad import SileroGate

_EMPTY = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class FrameGrid:
    """Sample and frame arithmetic of one model for windowed inference."""

    hop: int  # samples per feature frame
    n_fft: int  # samples per feature window
    stride: int  # feature frames per output frame
    radius: int  # receptive-field half-width, in feature frames

    @classmethod
    def for_model(cls, config: BundleConfig, max_context_s: float = 0.0) -> FrameGrid:
        """The grid of a bundle's frontend and network.

        ``max_context_s`` > 0 caps the context kept on each side below the receptive field: less
        work per window, but frames are then committed before all they depend on is known.
        """
        frontend, model = config.frontend, config.model
        # attention sees the whole window: a Whisper encoder's field is its 30 s
        radius = model.receptive_field if isinstance(model, ModelConfig) else model.max_frames * model.stride
        if max_context_s > 0:
            radius = min(radius, round(max_context_s * frontend.sample_rate / frontend.hop_length))
        return cls(frontend.hop_length, frontend.n_fft, config.model.stride, radius)

    @property
    def frame_samples(self) -> int:
        """Samples per output frame; windows start at multiples of it."""
        return self.hop * self.stride

    @property
    def left_frames(self) -> int:
        """Output frames of left context a window keeps before its first uncommitted frame."""
        return -(-self.radius // self.stride)

    def exact_features(self, samples: int) -> int:
        """Feature frames of a window made from its samples only (a window under n_fft is padded)."""
        return 0 if samples < self.n_fft else (samples - self.n_fft) // self.hop + 1

    def stable_frames(self, samples: int) -> int:
        """Output frames, from a window's start, whose receptive field lies inside its ``samples``."""
        last = self.exact_features(samples) - 1 - self.radius
        return 0 if last < 0 else last // self.stride + 1


@dataclass(frozen=True)
class Window:
    """Audio to run through the model, starting at output frame ``first_frame`` of its utterance."""

    first_frame: int
    audio: np.ndarray  # (samples,)
    end: int  # utterance sample just past the window
    final: bool


class Utterance:
    """The audio and committed log-probs of one utterance of a live stream.

    ``start`` is the utterance's first sample in the stream. All its audio is kept (a stream
    bounds an utterance's length), for a final pass over the whole of it. Call :meth:`window`,
    run its audio through the model, then :meth:`accept` the log-probs before taking the next
    window.
    """

    def __init__(self, grid: FrameGrid, start: int = 0) -> None:
        self.grid = grid
        self.start = start
        self.samples = 0  # samples appended so far
        self.committed_frames = 0
        self._buffer = _EMPTY  # the audio in its first ``samples``; grows by doubling
        self._committed: list[np.ndarray] = []
        self._window_end = 0

    @property
    def new_samples(self) -> int:
        """Samples appended since the last accepted window ended."""
        return self.samples - self._window_end

    @property
    def audio(self) -> np.ndarray:
        """All the utterance's audio (a view: appending later does not change it)."""
        return self._buffer[: self.samples]

    def append(self, samples: np.ndarray) -> None:
        end = self.samples + int(samples.shape[0])
        if end > self._buffer.shape[0]:
            grown = np.empty(max(end, 2 * self._buffer.shape[0]), dtype=np.float32)
            grown[: self.samples] = self.audio
            self._buffer = grown
        self._buffer[self.samples : end] = samples
        self.samples = end

    def split(self, at: int) -> np.ndarray:
        """End the utterance at utterance sample ``at`` (not before its committed frames); return the rest."""
        if at < self.committed_frames * self.grid.frame_samples:
            raise ValueError(f"cannot cut at sample {at}: frames up to {self.committed_frames} are committed")
        rest = self._buffer[at : self.samples].copy()
        self._buffer = self._buffer[:at]  # full: a later append moves to a new buffer, views stay intact
        self.samples = at
        return rest

    def window(self, final: bool = False) -> Window:
        """The audio from the left context of the first uncommitted frame to the end."""
        first = max(0, self.committed_frames - self.grid.left_frames)
        return Window(first, self.audio[first * self.grid.frame_samples :], self.samples, final)

    def accept(self, window: Window, log_probs: np.ndarray) -> np.ndarray:
        """Commit the frames of ``window``'s (frames, vocab) log-probs that are final.

        Returns the provisional frames after them (none for a final window).
        """
        frames = int(log_probs.shape[0])
        stable = frames if window.final else min(frames, self.grid.stable_frames(int(window.audio.shape[0])))
        begin = self.committed_frames - window.first_frame
        if stable > begin:
            self._committed.append(log_probs[begin:stable])
            self.committed_frames = window.first_frame + stable
        self._window_end = window.end
        return log_probs[max(begin, stable) :]

    def log_probs(self, vocab: int) -> np.ndarray:
        """The committed (frames, vocab) log-probs."""
        if not self._committed:
            return np.zeros((0, vocab), dtype=np.float32)
        if len(self._committed) > 1:
            self._committed = [np.concatenate(self._committed)]
        return self._committed[0]


class SpeechGate(Protocol):
    """Endpointing's view of a live signal: fed audio in pieces, it says whether speech was heard
    and how many samples of non-speech end what it was fed."""

    heard_speech: bool
    trailing_silence: int

    def feed(self, samples: np.ndarray) -> None: ...


GateKind = Literal["silero", "energy"]


def speech_gate(kind: GateKind, sample_rate: int, silence_db: float, vad_threshold: float) -> SpeechGate:
    """A new gate: Silero VAD at ``vad_threshold``, or frame energy above ``silence_db`` dBFS."""
    if kind == "silero":
        return SileroGate(sample_rate, vad_threshold)
    return EnergyGate(sample_rate, silence_db)


class EnergyGate:
    """Speech or silence by the energy of 20 ms frames: was speech heard, how long since."""

    def __init__(self, sample_rate: int, threshold_db: float, frame_ms: int = 20) -> None:
        self.frame = max(1, sample_rate * frame_ms // 1000)
        self.threshold = 10.0 ** (threshold_db / 10.0)  # mean power of a full-scale-1.0 signal
        self.heard_speech = False
        self.trailing_silence = 0  # samples since the last speech frame (or since the start)
        self._rest = _EMPTY

    def feed(self, samples: np.ndarray) -> None:
        data = np.concatenate([self._rest, samples]) if self._rest.size else samples
        n = data.shape[0] // self.frame
        self._rest = data[n * self.frame :]
        if n == 0:
            return
        power = np.square(data[: n * self.frame].reshape(n, self.frame)).mean(axis=1)
        loud = np.flatnonzero(power > self.threshold)
        if loud.size:
            self.heard_speech = True
            self.trailing_silence = (n - 1 - int(loud[-1])) * self.frame
        else:
            self.trailing_silence += n * self.frame


def quietest_point(audio: np.ndarray, window: int) -> int:
    """Offset of the start of the quietest ``window``-sample stretch of ``audio`` (0 if shorter)."""
    n = audio.shape[0] // window
    if n == 0:
        return 0
    energy = np.square(audio[: n * window].reshape(n, window)).mean(axis=1)
    return int(np.argmin(energy)) * window


class PcmStream:
    """Raw interleaved PCM arriving in pieces of any size, to mono float32 at the model's rate.

    The one PCM decoder: live streams feed it their messages, uploads of raw PCM and PCM WAV
    their bytes block by block. A piece may end inside a sample frame; the bytes left over wait
    for the next piece. Channels are averaged; a :class:`Resampler` keeps its filter state
    between pieces, so pieces join without clicks and any split gives the same samples.
    """

    WIDTHS: ClassVar[dict[str, int]] = {"pcm_s16le": 2, "pcm_f32le": 4}

    def __init__(self, encoding: str, source_rate: int, target_rate: int, channels: int = 1) -> None:
        if encoding not in self.WIDTHS:
            raise ValueError(f"unsupported encoding {encoding!r}; use one of {sorted(self.WIDTHS)}")
        if channels < 1:
            raise ValueError(f"PCM needs at least one channel, got {channels}")
        self.encoding = encoding
        self.channels = channels
        self.width = self.WIDTHS[encoding]  # bytes per sample
        self.frame_bytes = self.width * channels
        self._rest = b""
        self._resampler = Resampler(source_rate, target_rate)

    @property
    def source_rate(self) -> int:
        return self._resampler.source_rate

    @property
    def target_rate(self) -> int:
        return self._resampler.target_rate

    def decode(self, data: bytes | memoryview) -> np.ndarray:
        """The (samples,) of ``data`` (after any bytes left over before it)."""
        if self._rest:
            data = self._rest + data
        usable = len(data) - len(data) % self.frame_bytes
        self._rest = bytes(data[usable:])
        if usable == 0:
            return _EMPTY
        if self.encoding == "pcm_s16le":
            samples = np.multiply(
                np.frombuffer(data, dtype="<i2", count=usable // 2), np.float32(1 / 32768), dtype=np.float32
            )
        else:
            samples = np.frombuffer(data, dtype="<f4", count=usable // 4).astype(np.float32)
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
        return self._resampler.push(samples)

    def flush(self) -> np.ndarray:
        """The samples the resampler still holds (call once, at the end)."""
        return self._resampler.flush()
