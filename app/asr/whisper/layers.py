"""The transformer pieces shared by Whisper's encoder and decoder (pre-norm blocks, GELU MLPs)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

KeyValue = tuple[Tensor, Tensor]
"""Keys and values of one attention layer, each (batch, heads, frames, head_dim)."""


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's fixed sinusoidal positions for the encoder: (length, channels)."""
    increment = torch.log(torch.tensor(max_timescale)) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


class Attention(nn.Module):
    """Multi-head attention. Self-attention projects queries, keys and values with one fused
    ``qkv`` matrix; cross-attention has ``query`` and a fused ``key_value`` (keys have no bias
    in Whisper: their bias rows are zero)."""

    def __init__(self, d_model: int, heads: int, cross: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.cross = cross
        if cross:
            self.query = nn.Linear(d_model, d_model)
            self.key_value = nn.Linear(d_model, 2 * d_model)
        else:
            self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def split(self, x: Tensor) -> Tensor:
        """(batch, frames, d_model) -> (batch, heads, frames, head_dim)."""
        batch, frames, width = x.shape
        return x.view(batch, frames, self.heads, width // self.heads).transpose(1, 2)

    def project_key_value(self, source: Tensor) -> KeyValue:
        """Cross-attention keys and values of the encoder states (computed once per utterance)."""
        key, value = self.key_value(source).chunk(2, dim=-1)
        return self.split(key), self.split(value)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, cache: KeyValue | None = None, causal: bool = False
    ) -> tuple[Tensor, KeyValue]:
        """Attend from ``x`` (batch, frames, d_model).

        Self-attention appends this call's keys and values to ``cache`` (earlier positions);
        cross-attention takes the encoder's keys and values as ``cache`` (for a batch that is a
        multiple of theirs, consecutive sequences share a row of them). ``mask`` is a boolean
        (batch, 1, 1, keys) mask, True where a key may be attended. Returns the output and the
        keys and values to keep.
        """
        if self.cross:
            if cache is None:
                raise ValueError("cross-attention needs the encoder's keys and values")
            rows = cache[0].shape[0]
            if x.shape[0] != rows:  # several sequences per row (a beam search's): one row's queries
                sequences, frames, width = x.shape
                out, cache = self.forward(x.reshape(rows, -1, width), mask, cache)
                return out.reshape(sequences, frames, width), cache
            query, (key, value) = self.split(self.query(x)), cache
        else:
            query, key, value = (self.split(t) for t in self.qkv(x).chunk(3, dim=-1))
            if cache is not None:
                key, value = torch.cat([cache[0], key], dim=2), torch.cat([cache[1], value], dim=2)
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=causal and mask is None)
        batch, _, frames, _ = attended.shape
        return self.out(attended.transpose(1, 2).reshape(batch, frames, -1)), (key, value)


class Mlp(nn.Sequential):
    """d_model -> 4 d_model -> GELU -> d_model."""

    def __init__(self, d_model: int) -> None:
        super().__init__(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
