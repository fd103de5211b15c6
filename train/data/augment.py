"""On-the-fly augmentation: waveform effects (speed, gain, noise, babble, reverb, telephone, codec),
SpecAugment on features, and vocal tract length perturbation of mel filters.

Every waveform effect is applied with its own probability, so most utterances get zero to two
cheap effects; the costly codec round trip is rare. All functions take and return float32 numpy
arrays at 16 kHz (except :func:`spec_augment`, which works on a feature tensor).
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import av
import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

from app.asr.audio import decode_audio
from app.asr.resample import resample
from train.data.audio_io import SAMPLE_RATE

logger = logging.getLogger(__name__)

SPEEDS = (0.9, 0.95, 1.0, 1.05, 1.1)


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the augmentations (set ``enabled=False`` for clean training)."""

    enabled: bool = True
    p_speed: float = 0.5
    p_gain: float = 0.5
    p_noise: float = 0.3
    p_babble: float = 0.15
    p_reverb: float = 0.2
    p_telephone: float = 0.1
    p_codec: float = 0.08
    snr_db: tuple[float, float] = (5.0, 30.0)
    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 2
    time_width: float = 0.08

    def scaled(self, strength: float) -> AugmentConfig:
        """A copy with every probability and SpecAugment width multiplied by ``strength`` (0 to 1)."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"augmentation strength must be in [0, 1], got {strength}")
        probabilities = {f.name: getattr(self, f.name) * strength for f in fields(self) if f.name.startswith("p_")}
        return replace(
            self, **probabilities, freq_width=round(self.freq_width * strength), time_width=self.time_width * strength
        )


def speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (pitch changes with it), by resampling."""
    if factor == 1.0:
        return audio
    return resample(audio, round(factor * SAMPLE_RATE), SAMPLE_RATE)


VTLP_BOUNDARY_HZ = 4800.0  # below it (times the factor, where less than 1) frequencies scale linearly


def vtlp_matrix(n_freqs: int, factor: float, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """(n_freqs, n_freqs) linear map of a power spectrum's bins that warps its frequency axis as a
    vocal tract ``factor`` times shorter would (Jaitly and Hinton's VTLP): content at ``f`` moves to
    ``f * factor`` up to a boundary, and the rest of the band is squeezed or stretched linearly so
    that the Nyquist frequency stays where it is. ``mel_filters @ vtlp_matrix(...)`` are the
    filters of the warped spectrum; factor 1 gives the identity."""
    top = n_freqs - 1  # the Nyquist frequency's bin; frequencies below in bins, so factor 1 is exact
    target = torch.arange(n_freqs, dtype=torch.float64)
    boundary = VTLP_BOUNDARY_HZ / (sample_rate / 2) * top * min(factor, 1.0)
    above = top - (top - boundary / factor) * (top - target) / (top - boundary)
    source = torch.where(target <= boundary, target / factor, above)  # where each target bin's power comes from
    position = source.clamp(0, top)
    low = position.floor().long().clamp(max=top - 1)
    upper = (position - low).float()
    rows = torch.arange(n_freqs)
    matrix = torch.zeros(n_freqs, n_freqs)
    matrix[rows, low] = 1.0 - upper
    matrix[rows, low + 1] += upper
    return matrix


def gain(audio: np.ndarray, db: float) -> np.ndarray:
    """Scale by ``db`` decibels, keeping the peak below full scale."""
    out = audio * (10.0 ** (db / 20.0))
    peak = float(np.abs(out).max()) if out.size else 0.0
    return out / peak * 0.99 if peak > 0.99 else out


def coloured_noise(length: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectrum 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    n_fft = 1 << max(1, length - 1).bit_length()
    spectrum = np.fft.rfft(rng.standard_normal(n_fft))
    freqs = np.fft.rfftfreq(n_fft)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=n_fft)[:length]
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-9)).astype(np.float32)


def mix_at_snr(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` (tiled or cut to length) to ``audio`` at ``snr_db``."""
    if noise.size == 0 or audio.size == 0:
        return audio
    reps = int(np.ceil(audio.size / noise.size))
    noise = np.tile(noise, reps)[: audio.size]
    signal_power = float(np.mean(audio**2)) + 1e-10
    noise_power = float(np.mean(noise**2)) + 1e-10
    scale = np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (audio + scale * noise).astype(np.float32)


def reverb(audio: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room impulse response: exponentially decaying noise after a direct path."""
    length = int(min(rt60, 0.6) * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    rir = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    rir[0] = 1.0 / max(0.3, rng.uniform(0.3, 1.0))
    rir = rir / np.sqrt(np.sum(rir**2))
    size = audio.size + length - 1
    n_fft = 1 << (size - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(audio, n_fft) * np.fft.rfft(rir, n_fft), n_fft)[: audio.size]
    peak = float(np.abs(out).max()) + 1e-9
    return (out * (float(np.abs(audio).max()) / peak)).astype(np.float32)


def telephone(audio: np.ndarray) -> np.ndarray:
    """Narrow-band telephone channel: 8 kHz round trip with mu-law companding."""
    narrow = torch.from_numpy(np.clip(resample(audio, SAMPLE_RATE, 8000), -1, 1))
    coded = AF.mu_law_decoding(AF.mu_law_encoding(narrow, 256), 256).numpy()
    return _fit(resample(coded, 8000, SAMPLE_RATE), audio.size)


def codec_round_trip(audio: np.ndarray, codec: str, bitrate: int) -> np.ndarray:
    """Encode and decode in memory with PyAV ('libopus' in Ogg or 'libmp3lame' in MP3)."""
    fmt = "ogg" if codec == "libopus" else "mp3"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=SAMPLE_RATE, layout="mono")
        if not isinstance(stream, av.AudioStream):
            raise TypeError(f"{codec} is not an audio codec")
        stream.bit_rate = bitrate
        frame = av.AudioFrame.from_ndarray(
            (np.clip(audio, -1, 1) * 32767).astype(np.int16)[None, :], format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return _fit(decode_audio(buffer.getvalue(), SAMPLE_RATE), audio.size)


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    if audio.size >= length:
        return audio[:length]
    return np.pad(audio, (0, length - audio.size))


def augment_waveform(
    audio: np.ndarray, config: AugmentConfig, rng: random.Random, babble: Callable[[], np.ndarray] | None = None
) -> np.ndarray:
    """Apply a random chain of waveform effects to one utterance."""
    if not config.enabled:
        return audio
    nrng = np.random.default_rng(rng.getrandbits(32))
    if rng.random() < config.p_speed:
        audio = speed(audio, rng.choice(SPEEDS))
    if rng.random() < config.p_reverb:
        audio = reverb(audio, rng.uniform(0.15, 0.7), nrng)
    if rng.random() < config.p_noise:
        noise = coloured_noise(audio.size, rng.choice([0.0, 1.0, 2.0]), nrng)
        audio = mix_at_snr(audio, noise, rng.uniform(*config.snr_db))
    if babble is not None and rng.random() < config.p_babble:
        talkers = sum(_fit(babble(), audio.size) for _ in range(rng.randint(1, 3)))
        audio = mix_at_snr(audio, np.asarray(talkers, dtype=np.float32), rng.uniform(8.0, 25.0))
    if rng.random() < config.p_telephone:
        audio = telephone(audio)
    elif rng.random() < config.p_codec:
        codec = rng.choice(["libopus", "libmp3lame"])
        audio = codec_round_trip(audio, codec, rng.choice([12000, 16000, 24000] if codec == "libopus" else [32000]))
    if rng.random() < config.p_gain:
        audio = gain(audio, rng.uniform(-15.0, 6.0))
    return audio


def spec_augment(features: Tensor, length: int, config: AugmentConfig, rng: random.Random) -> Tensor:
    """Zero random mel bands and time spans of one utterance's (n_mels, frames) features, in place."""
    if not config.enabled:
        return features
    n_mels = features.shape[0]
    for _ in range(config.freq_masks):
        width = rng.randint(0, config.freq_width)
        start = rng.randint(0, max(0, n_mels - width))
        features[start : start + width, :] = 0.0
    max_width = int(config.time_width * length)
    for _ in range(config.time_masks):
        width = rng.randint(0, max_width) if max_width > 0 else 0
        start = rng.randint(0, max(0, length - width))
        features[:, start : start + width] = 0.0
    return features
