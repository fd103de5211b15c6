"""int8 weights for an ONNX network: one symmetric scale per output channel, float32 arithmetic.

Used by both ONNX paths (networks exported from PyTorch, and Whisper networks built from their
weights without it).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


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
