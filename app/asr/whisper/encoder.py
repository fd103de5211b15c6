"""Whisper's audio encoder, run at each utterance's own length (no padding to 30 seconds).

Two convolutions (the second with stride 2), fixed sinusoidal positions sliced to the length,
pre-norm transformer blocks and a final layer norm. Batches are zero-padded and masked, so an
utterance gives the same states alone or inside a batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from app.asr.whisper.layers import Attention, Mlp, sinusoids


class EncoderBlock(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.attn_ln = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, heads)
        self.mlp_ln = nn.LayerNorm(d_model)
        self.mlp = Mlp(d_model)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.attn(self.attn_ln(x), mask)[0]
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Log-mel frames (batch, n_mels, frames) in, states (batch, ceil(frames / 2), d_model) out."""

    stride = 2

    def __init__(self, n_mels: int, d_model: int, heads: int, layers: int, max_frames: int) -> None:
        super().__init__()
        self.max_frames = max_frames  # output frames: 1500 (30 s)
        self.conv1 = nn.Conv1d(n_mels, d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, 3, stride=2, padding=1)
        self.positions: Tensor
        self.register_buffer("positions", sinusoids(max_frames, d_model))  # the base file's (float16-rounded)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, heads) for _ in range(layers))
        self.ln_post = nn.LayerNorm(d_model)

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode.

        Args:
            features: (batch, n_mels, frames), zero past each length.
            lengths: (batch,) valid feature frames per row.

        Returns:
            states (batch, frames_out, d_model) and output lengths (batch,).
        """
        x, out_lengths, mask = self.stem(features, lengths)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_post(x), out_lengths

    def stem(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """The convolutions and positions: (batch, frames_out, d_model) inputs of the first block, the
        output lengths, and the blocks' (batch, 1, 1, frames_out) key mask (None for an unpadded batch)."""
        out_lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
        frames_out = (features.shape[-1] + 1) // 2
        if not torch.jit.is_tracing() and frames_out > self.max_frames:
            raise ValueError(f"{features.shape[-1]} feature frames exceed the encoder's {2 * self.max_frames} (30 s)")
        padded = features.shape[0] > 1 and bool((lengths < features.shape[-1]).any())
        x = F.gelu(self.conv1(features))
        if padded:
            x = x * _valid(lengths, x.shape[-1])[:, None, :]
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (batch, frames_out, d_model)
        x = x + self.positions[:frames_out].to(x.dtype)
        mask = _valid(out_lengths, frames_out)[:, None, None, :] if padded else None
        return x, out_lengths, mask


def _valid(lengths: Tensor, frames: int) -> Tensor:
    """(batch, frames) boolean, True on each row's valid frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]
