"""Log-mel feature frontend shared by training and serving."""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

from app.asr.configs import FrontendConfig, WhisperFrontendConfig


def num_frames(num_samples: Tensor, config: FrontendConfig) -> Tensor:
    """Frames produced for ``num_samples`` samples (no centring; audio shorter than n_fft is padded)."""
    padded = torch.clamp(num_samples, min=config.n_fft)
    return torch.div(padded - config.n_fft, config.hop_length, rounding_mode="floor") + 1


class LogMelFrontend(nn.Module):
    """Waveforms to normalised log-mel frames.

    Frames are not centred, so the first ``n`` frames of an utterance are the same whether it is
    computed alone or padded inside a batch; frames past an utterance's length are zeroed.
    """

    def __init__(self, config: FrontendConfig) -> None:
        super().__init__()
        self.config = config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            win_length=config.win_length,
            hop_length=config.hop_length,
            f_min=config.f_min,
            f_max=config.f_max,
            n_mels=config.n_mels,
            center=False,
            power=2.0,
        )
        if config.normalization == "global":
            mean = torch.tensor(config.mean, dtype=torch.float32)
            std = torch.tensor(config.std, dtype=torch.float32)
        else:
            mean = torch.zeros(config.n_mels)
            std = torch.ones(config.n_mels)
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", mean.view(1, -1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1), persistent=False)

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Compute features.

        Args:
            waveforms: (batch, samples) float audio at ``config.sample_rate``, zero-padded.
            lengths: (batch,) number of valid samples per row.

        Returns:
            features (batch, n_mels, frames) and frame lengths (batch,).
        """
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be (batch, samples), got shape {tuple(waveforms.shape)}")
        if waveforms.shape[1] < self.config.n_fft:
            waveforms = nn.functional.pad(waveforms, (0, self.config.n_fft - waveforms.shape[1]))
        frame_lengths = num_frames(lengths, self.config)
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            mel = self.mel_power(waveforms.float())  # (batch, n_mels, frames)
        feats = (torch.log(mel + self.config.log_offset) - self.mean) / self.std
        if _unpadded(waveforms, lengths):
            return feats, frame_lengths
        mask = torch.arange(feats.shape[-1], device=feats.device)[None, :] < frame_lengths[:, None]
        return feats * mask[:, None, :], frame_lengths

    def mel_power(self, waveforms: Tensor) -> Tensor:
        """(batch, samples) -> (batch, n_mels, frames) mel power spectrogram.

        The same as ``self.mel`` (torchaudio's ``MelSpectrogram``), with the power spectrum taken
        as re² + im² instead of ``|x|`` squared, which on a CPU costs about a third of the
        frontend's time for the square root.
        """
        spectrogram = self.mel.spectrogram
        spec = torch.stft(
            waveforms,
            n_fft=spectrogram.n_fft,
            hop_length=spectrogram.hop_length,
            win_length=spectrogram.win_length,
            window=spectrogram.window,
            center=False,
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # (batch, freqs, frames)
        return self.mel.mel_scale(power)

    def stats(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Per-mel sum and sum of squares of the un-normalised log-mel over valid frames."""
        mel = self.mel_power(waveforms.float())
        logmel = torch.log(mel + self.config.log_offset)
        frame_lengths = num_frames(lengths, self.config)
        mask = (torch.arange(logmel.shape[-1])[None, :] < frame_lengths[:, None]).to(logmel.dtype)
        total = (logmel * mask[:, None, :]).sum(dim=(0, 2))
        squares = (logmel.square() * mask[:, None, :]).sum(dim=(0, 2))
        return total, squares


def _unpadded(waveforms: Tensor, lengths: Tensor) -> bool:
    """Whether every row of a CPU batch is full length, so no frame needs masking (the case of
    a batch of one); on other devices the check would wait for the device, so it says no."""
    return waveforms.device.type == "cpu" and int(lengths.min()) == waveforms.shape[1]


class WhisperLogMel(nn.Module):
    """Whisper's log-mel frames at each utterance's own length (no padding to 30 s).

    Centred STFT (n_fft 400, hop 160, Hann window, reflect padding on the left, zeros after the
    audio as Whisper's 30-second padding gives), power spectrum, Slaney mel filters, log10
    clamped at 1e-10, then floored at each utterance's maximum minus 8 and scaled as (x + 4) / 4.
    ``samples // hop`` frames per utterance; frames past a row's length are zero.
    """

    def __init__(self, config: WhisperFrontendConfig) -> None:
        super().__init__()
        self.config = config
        filters = torchaudio.functional.melscale_fbanks(
            config.n_fft // 2 + 1, 0.0, config.sample_rate / 2, config.n_mels, config.sample_rate, "slaney", "slaney"
        )
        self.filters: Tensor
        self.window: Tensor
        self.register_buffer("filters", filters.T.contiguous(), persistent=False)  # (n_mels, freqs)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def forward(self, waveforms: Tensor, lengths: Tensor, filters: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(batch, samples) audio and (batch,) lengths -> (batch, n_mels, frames) features and frame lengths.

        ``filters``, one (n_mels, freqs) matrix per row, replace the mel filters: the training
        recipe's vocal tract length perturbation (``train.data.augment.vtlp_matrix``)."""
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be (batch, samples), got shape {tuple(waveforms.shape)}")
        hop, half = self.config.hop_length, self.config.n_fft // 2
        frame_lengths = torch.div(lengths, hop, rounding_mode="floor")
        frames = waveforms.shape[1] // hop
        padded = nn.functional.pad(waveforms.float(), (0, half + 1))
        left = padded[:, 1 : half + 1].flip(-1)  # reflect padding, as a centred STFT's
        padded = torch.cat([left, padded], dim=1)
        spec = torch.stft(padded, self.config.n_fft, hop, window=self.window, center=False, return_complex=True)
        power = spec[..., :frames].abs().square()
        mel = self.filters if filters is None else filters
        logmel = torch.clamp(mel @ power, min=1e-10).log10()  # (batch, n_mels, frames)
        valid = torch.arange(frames, device=logmel.device)[None, :] < frame_lengths[:, None]
        peak = logmel.masked_fill(~valid[:, None, :], -torch.inf).amax(dim=(1, 2), keepdim=True)
        feats = (torch.maximum(logmel, peak - 8.0) + 4.0) / 4.0
        return feats * valid[:, None, :], frame_lengths
