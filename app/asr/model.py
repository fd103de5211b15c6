"""The CTC acoustic model: 1-D time-channel separable convolutions (QuartzNet style).

Every layer zeroes the frames past each utterance's length, so an utterance gives the same
output alone or padded inside a batch. Only ``Conv1d``, ``BatchNorm1d`` and ``ReLU`` are used,
which export cleanly to ONNX and fuse for inference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from app.asr.configs import BlockConfig, ModelConfig


def strided_lengths(lengths: Tensor, stride: int) -> Tensor:
    """Output lengths of a 'same'-padded convolution with this stride: ceil(lengths / stride)."""
    return torch.div(lengths + stride - 1, stride, rounding_mode="floor")


class SeparableConv(nn.Module):
    """Depthwise conv over time, then pointwise conv over channels, then batch norm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dilation: int) -> None:
        super().__init__()
        padding = dilation * (kernel - 1) // 2
        self.depthwise = nn.Conv1d(
            c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False
        )
        self.pointwise: nn.Module = nn.Conv1d(c_in, c_out, 1, bias=False)
        self.norm: nn.Module = nn.BatchNorm1d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.pointwise(self.depthwise(x)))


class Block(nn.Module):
    """``repeat`` separable convolutions with ReLU, and an optional residual around them."""

    def __init__(self, c_in: int, config: BlockConfig, dropout: float) -> None:
        super().__init__()
        self.stride: int = config.stride
        layers = []
        for i in range(config.repeat):
            layers.append(
                SeparableConv(
                    c_in if i == 0 else config.channels,
                    config.channels,
                    config.kernel,
                    config.stride if i == 0 else 1,
                    config.dilation,
                )
            )
        self.layers = nn.ModuleList(layers)
        self.residual: nn.Module | None = None
        if config.residual:
            self.residual = nn.Sequential(
                nn.Conv1d(c_in, config.channels, 1, stride=config.stride, bias=False),
                nn.BatchNorm1d(config.channels),
            )
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: (batch, channels, frames); lengths: (batch,) valid frames after this block's stride."""
        skip = self.residual(x) if self.residual is not None else None
        mask: Tensor | None = None
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if mask is None:
                mask = time_mask(lengths, x.shape[-1]).to(x.dtype)
            if skip is not None and i == len(self.layers) - 1:
                x = x + skip
            x = self.dropout(self.act(x)) * mask
        return x


class SepConvCTC(nn.Module):
    """Features in, per-frame log-probabilities over the token vocabulary out."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        blocks = []
        c_in = config.n_mels
        for block in config.blocks:
            blocks.append(Block(c_in, block, config.dropout))
            c_in = block.channels
        self.blocks = nn.ModuleList(blocks)
        self.strides = [block.stride for block in config.blocks]
        self.head = nn.Conv1d(c_in, config.vocab_size, 1)

    @property
    def stride(self) -> int:
        return self.config.stride

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Run the network.

        Args:
            features: (batch, n_mels, frames), zero past each length.
            lengths: (batch,) valid frames per row.

        Returns:
            log_probs (batch, frames_out, vocab) and output lengths (batch,).
        """
        x = features
        for block, stride in zip(self.blocks, self.strides, strict=True):
            lengths = strided_lengths(lengths, stride)
            x = block(x, lengths)
        logits = self.head(x).transpose(1, 2)  # (batch, frames_out, vocab)
        return torch.log_softmax(logits.float(), dim=-1), lengths

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def time_mask(lengths: Tensor, frames: int) -> Tensor:
    """(batch, 1, frames) mask, 1 on valid frames and 0 past each length."""
    steps = torch.arange(frames, device=lengths.device)
    return (steps[None, :] < lengths[:, None]).unsqueeze(1)
