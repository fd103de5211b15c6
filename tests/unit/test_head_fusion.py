"""The mixture of two CTC heads' frame posteriors (``train.head_fusion.mix``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.head_fusion import mix


def log_probs(frames: int, seed: int) -> np.ndarray:
    return torch.log_softmax(torch.randn(frames, 29, generator=torch.Generator().manual_seed(seed)), -1).numpy()


def test_the_mixture_is_a_distribution_between_the_two_heads() -> None:
    a, b = [log_probs(7, 1), log_probs(3, 2)], [log_probs(7, 3), log_probs(3, 4)]
    for w in (0.0, 0.3, 1.0):
        mixed = mix(a, b, w)
        assert [m.shape for m in mixed] == [(7, 29), (3, 29)]
        assert np.allclose(np.exp(mixed[0]).sum(-1), 1.0, atol=1e-5)
    assert np.allclose(mix(a, b, 1.0)[1], a[1], atol=1e-5) and np.allclose(mix(a, b, 0.0)[0], b[0], atol=1e-5)
    # where both heads are the same, any mixture keeps their choice on every frame
    assert np.argmax(mix(a, a, 0.3)[0], -1).tolist() == np.argmax(a[0], -1).tolist()


def test_heads_of_other_frame_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="frames differ"):
        mix([log_probs(7, 1)], [log_probs(6, 2)], 0.5)
    with pytest.raises(ValueError):
        mix([log_probs(7, 1)], [], 0.5)  # another number of utterances
