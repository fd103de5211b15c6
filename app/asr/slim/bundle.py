"""A Whisper bundle's weights without PyTorch: what was trained here, checked against its base."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.asr.bundle_files import BundleError, check_weights, read_bundle_files
from app.asr.configs import BundleConfig, WhisperCTCConfig
from app.asr.whisper.adapter import adapter_shapes
from app.asr.whisper.base import BaseUnavailable, base_file, load_base


def trained_shapes(config: WhisperCTCConfig, base: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """The names and shapes a bundle on ``base`` stores: the CTC head, the fine-tuned encoder blocks
    and the decoder's adapter."""
    shapes: dict[str, tuple[int, ...]] = {
        "head.weight": (config.vocab_size, config.d_model),
        "head.bias": (config.vocab_size,),
    }
    for layer in config.tuned_layers:
        prefix = f"encoder.blocks.{layer}."
        shapes |= {k: tuple(v.shape) for k, v in base.items() if k.startswith(prefix)}
    return shapes | adapter_shapes(config, base)


def load_whisper_bundle(path: Path | str) -> tuple[BundleConfig, WhisperCTCConfig, dict[str, np.ndarray]]:
    """The config, network config and stored (trained) weights of the Whisper bundle at ``path``,
    after checking that its base is installed and that the weights fit; :class:`BundleError` if not."""
    config, trained = read_bundle_files(path)
    network = config.model
    if not isinstance(network, WhisperCTCConfig):
        raise BundleError(f"model bundle {path}: a {network.type} network needs PyTorch to serve")
    try:
        _, base = load_base(base_file(network.base))
    except BaseUnavailable as exc:
        raise BundleError(f"model bundle {path}: {exc}") from exc
    check_weights(path, trained, trained_shapes(network, base))
    return config, network, trained
