"""A low-rank adapter of the pretrained decoder, trained here and stored in the bundle.

Each adapted linear layer of each decoder block (the bundle's ``decoder_adapter_layers``) gets two
small matrices: ``down`` (rank, in) and ``up`` (out, rank), with any scale already folded into
``up``. Serving adds ``up @ down`` to the pretrained weight once, at load, so an adapted decoder
runs exactly as fast as the pretrained one (every runtime builds its decoder from the merged
weights). A bundle without adapter weights serves Whisper's decoder as it was released.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

import numpy as np

from app.asr.configs import DecoderLinear, WhisperCTCConfig

ADAPTED: tuple[str, ...] = get_args(DecoderLinear)
"""The linear layers of a decoder block that an adapter may change (a bundle lists its own in
``decoder_adapter_layers``)."""

PREFIX = "decoder_adapter."
"""Where a bundle stores the adapter: ``decoder_adapter.blocks.<i>.<layer>.down`` and ``.up``."""


def adapter_shapes(config: WhisperCTCConfig, base: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """The names and shapes of the adapter a bundle with ``config`` stores on ``base`` (none at rank 0)."""
    rank = config.decoder_adapter_rank
    if rank == 0:
        return {}
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(decoder_layers(base)):
        for layer in config.decoder_adapter_layers:
            out_features, in_features = base[f"decoder.blocks.{i}.{layer}.weight"].shape
            name = f"{PREFIX}blocks.{i}.{layer}"
            shapes[f"{name}.down"] = (rank, in_features)
            shapes[f"{name}.up"] = (out_features, rank)
    return shapes


def decoder_layers(base: Mapping[str, np.ndarray]) -> int:
    """The number of decoder blocks in ``base``."""
    return len({k.split(".")[2] for k in base if k.startswith("decoder.blocks.")})


def adapted(base: Mapping[str, np.ndarray], trained: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``base`` with every adapted decoder weight replaced by ``weight + up @ down`` from ``trained``
    (the bundle's weights); the others are shared, not copied, and ``base`` is left as it was."""
    weights = dict(base)
    for key, down in trained.items():
        if key.startswith(PREFIX) and key.endswith(".down"):
            name = key[len(PREFIX) : -len(".down")]
            up = trained[f"{PREFIX}{name}.up"]
            weight = f"decoder.{name}.weight"
            weights[weight] = (base[weight] + up.astype(np.float32) @ down.astype(np.float32)).astype(np.float32)
    return weights


def adapter_of(trained: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The adapter's entries of a bundle's weights."""
    return {k: v for k, v in trained.items() if k.startswith(PREFIX)}
