"""Inference runtimes for the acoustic model: batch-norm folding, ONNX export, ONNX Runtime.

The feature frontend always runs in PyTorch; these only change how the network runs.
"""

from __future__ import annotations

import copy
import io
import logging

import numpy as np
import torch
from torch import Tensor, nn

from app.asr.model import Block, SeparableConv, SepConvCTC
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


def export_onnx(model: SepConvCTC | WhisperCTC, example_frames: int = 200) -> bytes:
    """Serialise the (folded) network to ONNX with dynamic batch and time axes.

    Inputs: ``features`` (batch, n_mels, frames) float32 and ``lengths`` (batch,) int64.
    Outputs: ``log_probs`` (batch, frames_out, vocab) and ``out_lengths`` (batch,).
    """
    exported = inference_copy(model)
    if isinstance(exported, WhisperCTC):
        exported.encoder.always_mask = True  # tracing sees one unpadded row; the graph must mask any batch
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


def quantize_onnx_int8(onnx_model: bytes) -> bytes:
    """The ONNX network with every convolution's and matrix product's weights stored as int8, one
    scale per output channel.

    Each weight tensor becomes an int8 initializer (symmetric, zero point 0, scale
    ``max|w| / 127`` per output channel) feeding a ``DequantizeLinear`` node, so the file is
    about a quarter the size and the arithmetic stays float32. One scale per channel matters
    here: batch-norm folding gives every output channel its own range. Integer arithmetic (ONNX
    Runtime's dynamic quantization) was about 3x slower than float32 at this model's size, with
    twice this scheme's error (``docs/benchmarks.md``).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(onnx_model)
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    axes = {
        node.input[1]: 0 if node.op_type == "Conv" else 1 for node in graph.node if node.op_type in ("Conv", "MatMul")
    }
    weights = {name: axis for name, axis in axes.items() if name in initializers and len(initializers[name].dims) >= 2}
    dequantize = []
    for name, axis in weights.items():
        tensor = initializers[name]
        array = numpy_helper.to_array(tensor)
        quantized, scale = quantize_per_channel(array if axis == 0 else array.T)
        quantized = quantized if axis == 0 else np.ascontiguousarray(quantized.T)
        graph.initializer.remove(tensor)
        graph.initializer.extend(
            [
                numpy_helper.from_array(quantized, f"{name}_int8"),
                numpy_helper.from_array(scale, f"{name}_scale"),
                numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}_zero_point"),
            ]
        )
        inputs = [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"]
        dequantize.append(helper.make_node("DequantizeLinear", inputs, [name], name=f"{name}_dequantize", axis=axis))
    for node in reversed(dequantize):
        graph.node.insert(0, node)
    return model.SerializeToString()


def quantize_per_channel(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 of ``weight`` (out_channels, ...) with one float32 scale per output channel."""
    peak = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    quantized = np.clip(np.rint(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
    return quantized, scale


class OnnxNetwork:
    """The acoustic network in an ONNX Runtime session, called like the torch module."""

    def __init__(self, onnx_model: bytes, num_threads: int = 0, spin_wait: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = num_threads
        spin = "1" if spin_wait else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        self.session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        self.size_bytes = len(onnx_model)

    def __call__(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        log_probs, out_lengths = self.session.run(
            None, {"features": features.numpy().astype(np.float32, copy=False), "lengths": lengths.numpy()}
        )
        return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)
