"""Vocal tract length perturbation: the warp of the spectrum's frequency axis and the Whisper
frontend's per-row mel filters that carry it (the training recipe's ``--warp`` copies)."""

from __future__ import annotations

import math

import torch

from app.asr.configs import WhisperFrontendConfig
from app.asr.features import WhisperLogMel
from train.data.augment import VTLP_BOUNDARY_HZ, vtlp_matrix

N_FREQS, RATE = 201, 16000  # Whisper's n_fft 400 at 16 kHz: bins 40 Hz apart


def centre_of_mass(spectrum: torch.Tensor) -> float:
    """Mean frequency in Hz of a (N_FREQS,) power spectrum."""
    hz = torch.linspace(0, RATE / 2, N_FREQS)
    return float((spectrum * hz).sum() / spectrum.sum())


def test_factor_one_is_the_identity() -> None:
    assert torch.equal(vtlp_matrix(N_FREQS, 1.0, RATE), torch.eye(N_FREQS))


def test_low_frequencies_move_by_the_factor_and_the_band_keeps_its_edges() -> None:
    for factor in (0.88, 0.95, 1.05, 1.12):
        matrix = vtlp_matrix(N_FREQS, factor, RATE)
        for hz in (480.0, 1000.0, 2000.0, 3000.0):  # bins 12, 25, 50 and 75
            tone = torch.zeros(N_FREQS)
            tone[round(hz / 40)] = 1.0
            assert math.isclose(centre_of_mass(matrix @ tone), hz * factor, abs_tol=20.0), (factor, hz)
        assert torch.all(matrix >= 0) and torch.all(matrix.sum(dim=1) > 0.99)  # every target bin is fed
        flat = matrix @ torch.ones(N_FREQS)
        assert torch.allclose(flat, torch.ones(N_FREQS), atol=1e-5)  # a flat spectrum stays flat
        top = torch.zeros(N_FREQS)
        top[-1] = 1.0
        assert (matrix @ top)[-1] == 1.0  # the Nyquist bin stays put
    assert VTLP_BOUNDARY_HZ < RATE / 2


def test_warped_filters_move_a_tone_up_the_mel_bins_and_factor_one_changes_nothing() -> None:
    frontend = WhisperLogMel(WhisperFrontendConfig())
    t = torch.arange(RATE) / RATE
    tone = (0.3 * torch.sin(2 * math.pi * 1000.0 * t)).repeat(3, 1)
    lengths = torch.full((3,), RATE)
    filters = torch.stack([frontend.filters @ vtlp_matrix(N_FREQS, f, RATE) for f in (1.0, 0.85, 1.15)])
    warped, _ = frontend(tone, lengths, filters)
    plain, _ = frontend(tone, lengths)
    assert torch.allclose(warped[0], plain[0], atol=1e-5)
    peaks = [int(row.mean(dim=1).argmax()) for row in warped]  # the loudest mel bin of each row
    assert peaks[1] < peaks[0] < peaks[2], peaks
