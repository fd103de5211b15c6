"""The log-mel frontend: torchaudio's mel spectrogram, masking past each utterance's length."""

from __future__ import annotations

import torch

from app.asr.configs import default_config
from app.asr.features import LogMelFrontend, num_frames


def _frontend() -> LogMelFrontend:
    return LogMelFrontend(default_config().frontend).eval()


def test_mel_power_equals_torchaudio_mel_spectrogram() -> None:
    frontend = _frontend()
    audio = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(frontend.mel_power(audio), frontend.mel(audio), rtol=1e-4, atol=1e-6)


def test_a_padded_row_equals_the_row_alone_and_is_zero_past_its_length() -> None:
    frontend = _frontend()
    short, long = (0.1 * torch.randn(n, generator=torch.Generator().manual_seed(n)) for n in (8000, 16000))
    batch = torch.zeros(2, 16000)
    batch[0, :8000], batch[1] = short, long
    with torch.inference_mode():
        padded, lengths = frontend(batch, torch.tensor([8000, 16000]))
        alone, alone_lengths = frontend(short[None], torch.tensor([8000]))
    n = int(num_frames(torch.tensor(8000), frontend.config))
    assert lengths.tolist() == [n, int(num_frames(torch.tensor(16000), frontend.config))]
    assert alone_lengths.tolist() == [n] and alone.shape[-1] == n
    torch.testing.assert_close(padded[0, :, :n], alone[0])
    assert padded[0, :, n:].abs().max() == 0


def test_a_row_shorter_than_its_tensor_is_masked_even_alone() -> None:
    frontend = _frontend()
    audio = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        features, lengths = frontend(audio, torch.tensor([8000]))
    assert features[0, :, int(lengths[0]) :].abs().max() == 0
