"""The NumPy Whisper front end equals the torch one (``app.asr.features.WhisperLogMel``) on real
speech, alone and in a padded batch, and imports without PyTorch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchaudio

from app.asr.configs import WhisperFrontendConfig
from app.asr.features import WhisperLogMel
from app.asr.slim.frontend import NumpyWhisperLogMel, hann_window, slaney_mel_filters
from tests.support import cv100_clips

FEATURE_TOLERANCE = 1e-4  # max |difference| of the features after (x + 4) / 4 (values in about [-1, 2])


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [audio for audio, _ in cv100_clips(3)]


def torch_features(waveforms: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features, frame_lengths = WhisperLogMel(WhisperFrontendConfig())(
        torch.from_numpy(waveforms), torch.from_numpy(lengths)
    )
    return features.numpy(), frame_lengths.numpy()


def test_window_and_filters_equal_torch() -> None:
    config = WhisperFrontendConfig()
    filters = torchaudio.functional.melscale_fbanks(201, 0.0, 8000.0, 80, 16000, "slaney", "slaney").T.numpy()
    np.testing.assert_allclose(slaney_mel_filters(201, 80, 16000), filters, rtol=0, atol=1e-6)
    np.testing.assert_allclose(hann_window(config.n_fft), torch.hann_window(config.n_fft).numpy(), rtol=0, atol=1e-6)


def test_each_clip_alone_equals_torch(clips: list[np.ndarray]) -> None:
    frontend = NumpyWhisperLogMel(WhisperFrontendConfig())
    for audio in clips:
        lengths = np.array([audio.size])
        ours, frames = frontend(audio[None], lengths)
        reference, reference_frames = torch_features(audio[None], lengths)
        assert ours.dtype == np.float32 and frames.dtype == np.int64
        assert ours.shape == reference.shape == (1, 80, audio.size // 160)
        assert frames.tolist() == reference_frames.tolist() == [audio.size // 160]
        np.testing.assert_allclose(ours, reference, rtol=0, atol=FEATURE_TOLERANCE)


def test_padded_batch_equals_torch(clips: list[np.ndarray]) -> None:
    rows = [clips[0], clips[1][: clips[1].size // 2], clips[2], clips[0][:150]]  # the last is under one hop
    lengths = np.array([row.size for row in rows], dtype=np.int64)
    waveforms = np.zeros((len(rows), int(lengths.max()) + 123), dtype=np.float32)
    for n, row in enumerate(rows):
        waveforms[n, : row.size] = row
    ours, frames = NumpyWhisperLogMel(WhisperFrontendConfig())(waveforms, lengths)
    reference, reference_frames = torch_features(waveforms, lengths)
    assert ours.shape == reference.shape and frames.tolist() == reference_frames.tolist()
    np.testing.assert_allclose(ours, reference, rtol=0, atol=FEATURE_TOLERANCE)
    assert not ours[3].any()  # no whole frame in the short row
    for n, count in enumerate(frames.tolist()):
        assert not ours[n, :, count:].any()
        alone, _ = NumpyWhisperLogMel(WhisperFrontendConfig())(rows[n][None], lengths[n : n + 1])
        np.testing.assert_allclose(ours[n, :, :count], alone[0], rtol=0, atol=FEATURE_TOLERANCE)


def test_threads_share_the_work_without_changing_a_bit(clips: list[np.ndarray]) -> None:
    rows = [clips[0], clips[1], clips[2][:12345]]
    lengths = np.array([row.size for row in rows], dtype=np.int64)
    waveforms = np.zeros((len(rows), int(lengths.max())), dtype=np.float32)
    for n, row in enumerate(rows):
        waveforms[n, : row.size] = row
    alone, _ = NumpyWhisperLogMel(WhisperFrontendConfig())(waveforms, lengths)
    for threads in (2, 3):
        shared, _ = NumpyWhisperLogMel(WhisperFrontendConfig(), threads=threads)(waveforms, lengths)
        np.testing.assert_array_equal(shared, alone)


def test_audio_under_one_hop_has_no_frames() -> None:
    frontend = NumpyWhisperLogMel(WhisperFrontendConfig(), threads=2)
    features, frames = frontend(np.ones((2, 100), np.float32), np.array([100, 50]))
    assert features.shape == (2, 80, 0) and frames.tolist() == [0, 0]


def test_bad_shapes_are_refused() -> None:
    frontend = NumpyWhisperLogMel(WhisperFrontendConfig())
    with pytest.raises(ValueError, match="batch, samples"):
        frontend(np.zeros(1600, np.float32), np.array([1600]))
    with pytest.raises(ValueError, match="lengths"):
        frontend(np.zeros((2, 1600), np.float32), np.array([1600]))
    with pytest.raises(ValueError, match="threads"):
        NumpyWhisperLogMel(WhisperFrontendConfig(), threads=0)


def test_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchaudio'] = None\n"
        "import numpy as np\n"
        "from app.asr.configs import WhisperFrontendConfig\n"
        "from app.asr.slim.frontend import NumpyWhisperLogMel\n"
        "frontend = NumpyWhisperLogMel(WhisperFrontendConfig())\n"
        "features, frames = frontend(np.ones((1, 1600), np.float32), np.array([1600]))\n"
        "assert features.shape == (1, 80, 10) and frames.tolist() == [10]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
