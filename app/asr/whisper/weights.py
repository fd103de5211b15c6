"""Whisper's tensors from a CTranslate2 file, renamed to this package's modules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from app.asr.whisper.ct2 import CT2FormatError, read_ct2

_LINEAR = {"gamma": "weight", "beta": "bias", "weight": "weight", "bias": "bias"}
_ENCODER_LAYER = {
    "self_attention/layer_norm": "attn_ln",
    "self_attention/linear_0": "attn.qkv",
    "self_attention/linear_1": "attn.out",
    "ffn/layer_norm": "mlp_ln",
    "ffn/linear_0": "mlp.0",
    "ffn/linear_1": "mlp.2",
}
_DECODER_LAYER = {
    **_ENCODER_LAYER,
    "attention/layer_norm": "cross_attn_ln",
    "attention/linear_0": "cross_attn.query",
    "attention/linear_1": "cross_attn.key_value",
    "attention/linear_2": "cross_attn.out",
}
_TOP = {
    "encoder/conv1": "encoder.conv1",
    "encoder/conv2": "encoder.conv2",
    "encoder/layer_norm": "encoder.ln_post",
    "decoder/layer_norm": "decoder.ln",
    "decoder/embeddings": "decoder.token_embedding",
}
T = TypeVar("T")

_LAYER = re.compile(r"(encoder|decoder)/layer_(\d+)/(.+)/(\w+)$")


@dataclass(frozen=True)
class WhisperDims:
    """The shape of a Whisper network, read from its weights."""

    n_mels: int
    d_model: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    max_frames: int  # encoder output frames (1500: 30 s)
    max_tokens: int  # decoder positions (448)
    vocab_size: int


def _rename(name: str) -> str | None:
    """This package's state-dict key of a CTranslate2 variable, or None for what it does not use."""
    if name.endswith("/position_encodings/encodings"):
        return "encoder.positions" if name.startswith("encoder") else "decoder.positions"
    if match := _LAYER.match(name):
        part, index, module, leaf = match.groups()
        table = _ENCODER_LAYER if part == "encoder" else _DECODER_LAYER
        if module in table and leaf in _LINEAR:
            return f"{part}.blocks.{index}.{table[module]}.{_LINEAR[leaf]}"
        return None
    module, _, leaf = name.rpartition("/")
    if module in _TOP and leaf in _LINEAR:
        return f"{_TOP[module]}.{_LINEAR[leaf]}"
    return None


def read_whisper(path: Path | str) -> tuple[WhisperDims, dict[str, np.ndarray]]:
    """The dims and float32 weights (keys ``encoder.*`` and ``decoder.*``, NumPy arrays) of a
    CTranslate2 Whisper file."""
    spec, variables = read_ct2(path)
    if spec != "WhisperSpec":
        raise CT2FormatError(f"{path} holds a {spec}, not a Whisper model")
    state = {}
    for name, array in variables.items():
        key = _rename(name)
        if key is not None:
            state[key] = np.ascontiguousarray(array, dtype=np.float32)
    layers = {
        part: len({k.split(".")[2] for k in state if k.startswith(f"{part}.blocks.")})
        for part in ("encoder", "decoder")
    }
    dims = WhisperDims(
        n_mels=int(variables["encoder/conv1/weight"].shape[1]),
        d_model=int(variables["encoder/conv1/weight"].shape[0]),
        heads=int(variables["encoder/num_heads"]),
        encoder_layers=layers["encoder"],
        decoder_layers=layers["decoder"],
        max_frames=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_tokens=int(variables["decoder/position_encodings/encodings"].shape[0]),
        vocab_size=int(variables["decoder/embeddings/weight"].shape[0]),
    )
    return dims, state


def part(state: dict[str, T], prefix: str) -> dict[str, T]:
    """The entries under ``prefix.`` with the prefix removed."""
    return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
