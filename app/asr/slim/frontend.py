"""Whisper's log-mel frames in NumPy: the same maths as ``app.asr.features.WhisperLogMel``."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from app.asr.configs import WhisperFrontendConfig

LOG_FLOOR = 1e-10  # log10 is taken of the mel power clamped here
DYNAMIC_RANGE = 8.0  # each utterance is floored at its own maximum minus this (log10 units)
FFT_BLOCK = 128  # frames transformed at a time: NumPy's float32 FFT is twice as fast on blocks that stay in cache


def hann_window(size: int) -> np.ndarray:
    """(size,) float32 periodic Hann window, as ``torch.hann_window(size)``."""
    n = np.arange(size, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * math.pi * n / size)).astype(np.float32)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    step, min_log_hz, log_step = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    mels = hz / step
    above = hz >= min_log_hz
    mels[above] = min_log_hz / step + np.log(hz[above] / min_log_hz) / log_step
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """The inverse of ``_hz_to_mel``."""
    step, min_log_hz, log_step = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / step
    hz = mels * step
    above = mels >= min_log_mel
    hz[above] = min_log_hz * np.exp(log_step * (mels[above] - min_log_mel))
    return hz


def slaney_mel_filters(n_freqs: int, n_mels: int, sample_rate: int) -> np.ndarray:
    """(n_mels, n_freqs) float32 triangular filters from 0 Hz to Nyquist on Slaney's mel scale,
    each scaled to unit area (Slaney normalisation), as torchaudio's
    ``melscale_fbanks(n_freqs, 0, sample_rate / 2, n_mels, sample_rate, "slaney", "slaney")``."""
    freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array([sample_rate / 2]))[0], n_mels + 2))
    widths = np.diff(edges)  # (n_mels + 1,)
    slopes = edges[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))  # (n_freqs, n_mels)
    filters *= 2.0 / (edges[2:] - edges[:-2])
    return np.ascontiguousarray(filters.T, dtype=np.float32)


class NumpyWhisperLogMel:
    """Whisper's log-mel frames at each utterance's own length, without PyTorch.

    Centred STFT (n_fft 400, hop 160, periodic Hann window, reflect padding on the left, zeros
    after the audio as Whisper's 30-second padding gives), power spectrum, Slaney mel filters,
    log10 clamped at 1e-10, then floored at each utterance's maximum minus 8 and scaled as
    (x + 4) / 4. ``samples // hop`` frames per utterance; frames past a row's length are zero.
    Equal to ``app.asr.features.WhisperLogMel`` within float32 rounding.

    ``threads`` share the frames' transforms (NumPy's FFT and BLAS release the GIL); the calling
    thread is one of them.
    """

    def __init__(self, config: WhisperFrontendConfig, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.config = config
        self.window = hann_window(config.n_fft)  # (n_fft,)
        self.filters = slaney_mel_filters(config.n_fft // 2 + 1, config.n_mels, config.sample_rate)  # (n_mels, freqs)
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="log-mel") if threads > 1 else None

    def __call__(self, waveforms: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(batch, samples) audio and (batch,) valid sample counts -> (batch, n_mels, frames)
        float32 features and (batch,) int64 frame counts."""
        if waveforms.ndim != 2:
            raise ValueError(f"waveforms must be (batch, samples), got shape {waveforms.shape}")
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (waveforms.shape[0],):
            raise ValueError(f"lengths must be (batch,) = ({waveforms.shape[0]},), got shape {lengths.shape}")
        hop = self.config.hop_length
        frame_lengths = lengths // hop
        logmel = self.log_mel(waveforms)  # (batch, n_mels, frames)
        for row, count in enumerate(frame_lengths.tolist()):
            valid = logmel[row, :, :count]
            if count > 0:
                np.maximum(valid, valid.max() - DYNAMIC_RANGE, out=valid)
            logmel[row, :, count:] = -4.0  # zero once scaled
        logmel += 4.0
        logmel *= 0.25
        return logmel, frame_lengths

    def log_mel(self, waveforms: np.ndarray) -> np.ndarray:
        """(batch, samples) -> (batch, n_mels, samples // hop) float32 log10 mel power, clamped at 1e-10."""
        n_fft, hop = self.config.n_fft, self.config.hop_length
        half = n_fft // 2
        batch, samples = waveforms.shape
        frames = samples // hop
        padded = np.zeros((batch, half + samples + half + 1), dtype=np.float32)
        padded[:, half : half + samples] = waveforms
        padded[:, :half] = padded[:, 2 * half : half : -1]  # reflect padding, as a centred STFT's
        windows = sliding_window_view(padded, n_fft, axis=1)[:, : frames * hop : hop]  # (batch, frames, n_fft)
        mel = np.empty((batch, self.config.n_mels, frames), dtype=np.float32)
        blocks = [(row, first) for row in range(batch) for first in range(0, frames, FFT_BLOCK)]
        shares = [
            blocks[n * len(blocks) // self.threads : (n + 1) * len(blocks) // self.threads] for n in range(self.threads)
        ]

        def transform(share: list[tuple[int, int]]) -> None:
            for row, first in share:
                self._mel_power(windows[row, first : first + FFT_BLOCK], mel[row, :, first : first + FFT_BLOCK])

        others = [self._pool.submit(transform, share) for share in shares[1:] if share] if self._pool else []
        transform(shares[0])
        for other in others:
            other.result()
        np.maximum(mel, LOG_FLOOR, out=mel)
        return np.log10(mel, out=mel)

    def _mel_power(self, frames: np.ndarray, out: np.ndarray) -> None:
        """(block, n_fft) audio frames -> their mel power spectrum, written to ``out`` (n_mels, block)."""
        spectrum = np.fft.rfft(frames * self.window)  # (block, freqs) complex64
        power = np.square(spectrum.real)
        power += np.square(spectrum.imag)
        np.matmul(self.filters, power.T, out=out)
