"""Inference runtimes for PyTorch-built networks: batch-norm folding, ONNX export, ONNX Runtime.

The feature frontend always runs in PyTorch; these only change how the network runs.
"""

from __future__ import annotations

import copy
import io
import logging

import torch
from torch import Tensor, nn

from app.asr.model import Block, SeparableConv, SepConvCTC
from app.asr.slim.sessions import OnnxCtcNetwork
from app.asr.whisper.model import WhisperCTC

logger = logging.getLogger(__name__)

ONNX_OPSET = 17


def _fold(conv: nn.Module, norm: nn.Module) -> nn.Conv1d:
    """A convolution equal to ``norm(conv(x))`` in eval mode."""
    if not isinstance(conv, nn.Conv1d) or not isinstance(norm, nn.BatchNorm1d):
        raise TypeError(f"cannot fold {type(norm).__name__} into {type(conv).__name__}")
    assert norm.running_mean is not None and norm.running_var is not None
    scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
    fused = nn.Conv1d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size[0],
        stride=conv.stride[0],
        padding=conv.padding[0],
        dilation=conv.dilation[0],
        groups=conv.groups,
        bias=True,
    )
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(norm.running_mean)
    fused.weight = nn.Parameter(conv.weight.detach() * scale[:, None, None])
    fused.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias.detach())
    return fused


def fold_batchnorm(model: SepConvCTC) -> SepConvCTC:
    """A copy of ``model`` (eval mode) with every batch norm folded into the conv before it."""
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, SeparableConv):
            module.pointwise = _fold(module.pointwise, module.norm)
            module.norm = nn.Identity()
        elif isinstance(module, Block) and isinstance(module.residual, nn.Sequential):
            module.residual = _fold(module.residual[0], module.residual[1])
    return fused


def inference_copy(model: SepConvCTC | WhisperCTC) -> nn.Module:
    """The network as it runs for inference: batch norms folded (convolutional), or an eval-mode copy."""
    if isinstance(model, SepConvCTC):
        return fold_batchnorm(model)
    return copy.deepcopy(model).eval()


def export_onnx(model: SepConvCTC, example_frames: int = 200) -> bytes:
    """Serialise the folded convolutional network to ONNX with dynamic batch and time axes.

    Inputs: ``features`` (batch, n_mels, frames) float32 and ``lengths`` (batch,) int64.
    Outputs: ``log_probs`` (batch, frames_out, vocab) and ``out_lengths`` (batch,). (A Whisper
    network's ONNX graph is built from its weights without PyTorch: ``app.asr.slim.graphs``.)
    """
    exported = fold_batchnorm(model)
    features = torch.zeros(1, model.config.n_mels, example_frames)
    lengths = torch.tensor([example_frames])
    buffer = io.BytesIO()
    torch.onnx.export(
        exported,
        (features, lengths),
        buffer,  # type: ignore[arg-type]  # the TorchScript exporter takes file objects
        input_names=["features", "lengths"],
        output_names=["log_probs", "out_lengths"],
        dynamic_axes={
            "features": {0: "batch", 2: "frames"},
            "lengths": {0: "batch"},
            "log_probs": {0: "batch", 1: "frames_out"},
            "out_lengths": {0: "batch"},
        },
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    return buffer.getvalue()


class OnnxNetwork:
    """An ONNX network called like the torch module, tensors in and out (the session and its
    options are :class:`app.asr.slim.sessions.OnnxCtcNetwork`'s)."""

    def __init__(self, onnx_model: bytes, num_threads: int = 0, spin_wait: bool = False) -> None:
        self.network = OnnxCtcNetwork(onnx_model, num_threads, spin_wait)
        self.size_bytes = len(onnx_model)

    def __call__(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        log_probs, out_lengths = self.network(features.numpy(), lengths.numpy())
        return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)
