"""Sample-rate conversion: one stateful resampler for every path that changes a signal's rate.

Uploads, live streams, the training data loader, augmentation, the client and the bench all
resample through :class:`Resampler` (FFmpeg's swr, through PyAV). Its filter keeps its state
between pushes, so a signal fed in blocks of any size gives the same samples as the whole signal
fed at once, and pieces join without clicks; :meth:`Resampler.flush` returns what the filter
still holds at the end. Signals are mono float32 ``(samples,)`` in and out.
"""

from __future__ import annotations

import av
import numpy as np

_EMPTY = np.zeros(0, dtype=np.float32)


class Resampler:
    """Mono float32 at ``source_rate`` in, mono float32 at ``target_rate`` out, block by block.

    :meth:`push` takes samples; :meth:`push_frame` takes a decoded PyAV frame of any sample format
    and channel layout at ``source_rate`` and averages its channels (FFmpeg's own downmix adds
    gain). Feed one kind per resampler. Call :meth:`flush` once, at the end.
    """

    def __init__(self, source_rate: int, target_rate: int) -> None:
        if source_rate <= 0 or target_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {source_rate} and {target_rate}")
        self.source_rate = source_rate
        self.target_rate = target_rate
        # Planar float keeps a frame's channels apart; the layout follows the input's.
        self._swr = av.AudioResampler(format="fltp", rate=target_rate)

    @property
    def passthrough(self) -> bool:
        """Whether the rates are equal, so pushed samples come back as they are."""
        return self.source_rate == self.target_rate

    def push(self, samples: np.ndarray) -> np.ndarray:
        """The resampled (samples,) that ``samples`` completes; the filter keeps the rest."""
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"expected mono (samples,), got shape {samples.shape}")
        if self.passthrough or samples.size == 0:
            return samples
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples)[None, :], format="fltp", layout="mono")
        frame.sample_rate = self.source_rate
        return _mono(self._swr.resample(frame))

    def push_frame(self, frame: av.AudioFrame) -> np.ndarray:
        """A decoded frame's samples as mono float32 at the target rate (channels averaged)."""
        if frame.sample_rate != self.source_rate:
            raise ValueError(f"a frame at {frame.sample_rate} Hz fed to a resampler from {self.source_rate} Hz")
        return _mono(self._swr.resample(frame))

    def flush(self) -> np.ndarray:
        """The samples the filter still holds (call once, at the end)."""
        return _mono(self._swr.resample(None))


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """A whole mono float32 signal resampled in one go: what a :class:`Resampler` gives for it."""
    resampler = Resampler(source_rate, target_rate)
    head = resampler.push(samples)
    tail = resampler.flush()
    return np.concatenate([head, tail]) if tail.size else np.ascontiguousarray(head)


def _mono(frames: list[av.AudioFrame]) -> np.ndarray:
    """The (samples,) of planar float frames, each averaged over its channels."""
    parts = []
    for frame in frames:
        planes = frame.to_ndarray()  # (channels, samples)
        parts.append(planes[0] if planes.shape[0] == 1 else planes.mean(axis=0, dtype=np.float32))
    if not parts:
        return _EMPTY
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
