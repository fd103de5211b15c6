"""int8 for ONNX networks, two ways.

- :func:`quantize_onnx_int8`: int8 weights, one symmetric scale per output channel, float32
  arithmetic. The ``int8`` precision of the convolutional CTC networks exported from PyTorch
  (``en-small``), whose matrices are too small for integer arithmetic to pay.
- :func:`quantize_onnx_integer`: int8 weights and activations, integer matrix products (ONNX
  Runtime's dynamic quantization). The Whisper networks' ``int8``: the CTC network's and the
  second pass's transformer matrices are large enough for integer arithmetic to win on CPUs with
  integer dot-product instructions (``docs/benchmarks.md``). :func:`scale_rows_apart` then gives
  each row of an activation its own scale, so that rows batched together do not change each other.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

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


def quantize_onnx_integer(onnx_model: bytes, per_channel: bool = False, float_weights: tuple[str, ...] = ()) -> bytes:
    """The ONNX network with every matrix product by a constant weight done in int8: the weights
    stored as int8, each input quantized as the network runs (one scale per run), the product
    accumulated in int32 and scaled back to float32. Embedding tables (``Gather``) are stored as
    int8 too.

    ``per_channel``: one weight scale per output channel, else one per tensor. ``float_weights``:
    name prefixes of weights whose products stay float32 (a small output layer whose rounding
    costs more accuracy than its time). Convolutions stay float32: with ONNX Runtime's integer
    convolutions too, the Whisper CTC network took 1.4x the time of matrix products alone
    (``docs/benchmarks.md``).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic  # 0.5 s to import: only when used

    graph = onnx.load_from_string(onnx_model).graph
    keep = [
        node.name
        for node in graph.node
        if float_weights and node.op_type == "MatMul" and any(name.startswith(float_weights) for name in node.input[1:])
    ]
    root = logging.getLogger()
    advice = _DropAdvice()
    root.addFilter(advice)
    try:
        with tempfile.TemporaryDirectory(prefix="asr-int8-") as folder:
            source, target = Path(folder) / "float32.onnx", Path(folder) / "int8.onnx"
            source.write_bytes(onnx_model)
            # the graph's own fused ops (com.microsoft) escape ONNX's shape inference: they are float32
            options = {"DefaultTensorType": onnx.TensorProto.FLOAT}
            quantize_dynamic(
                source,
                target,
                op_types_to_quantize=["MatMul", "Gather"],
                per_channel=per_channel,
                nodes_to_exclude=keep,
                weight_type=QuantType.QInt8,
                extra_options=options,
            )
            return target.read_bytes()
    finally:
        root.removeFilter(advice)


class _DropAdvice(logging.Filter):
    """Drops what the quantizer tells the root logger below a warning (a line per tensor), and its
    advice to run its pre-processing (whose shape inference cannot type the graph's fused ops;
    ONNX Runtime optimises the graph at load anyway)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" not in record.pathname:
            return True
        return record.levelno >= logging.WARNING and "pre-processing before quantization" not in record.getMessage()


def scale_rows_apart(onnx_model: bytes) -> bytes:
    """``onnx_model`` from :func:`quantize_onnx_integer` with each activation quantized one row (its
    last axis) at a time instead of one scale per run: a row's product then does not depend on the
    other rows in the batch (a batch's other sequences, other requests).

    Each ``DynamicQuantizeLinear`` becomes the same asymmetric uint8 quantization per row (scale
    and zero point from the row's range, 0 included). ONNX Runtime's integer product takes one
    zero point for its left input, so the products run with zero point 0 and subtract each row's
    zero point times the weight's column sums afterwards, in int32: the same integers.
    """
    model = onnx.load_from_string(onnx_model)
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants: dict[str, np.ndarray] = {
        "rows_zero": np.array(0.0, np.float32),
        "rows_top": np.array(255.0, np.float32),
        "rows_tiny": np.array(1e-30, np.float32),
        "rows_zero_u8": np.array(0, np.uint8),
    }
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    row_zeros: dict[str, str] = {}  # a DynamicQuantizeLinear's zero point: its rows' zero points
    sums: set[str] = set()
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "DynamicQuantizeLinear":
            x, (quantized, scale, zero_point) = node.input[0], node.output
            row_zeros[zero_point] = f"{zero_point}_rows"
            nodes += _row_quantization(x, quantized, scale, row_zeros[zero_point])
            continue
        nodes.append(node)
        if node.op_type != "MatMulInteger" or node.input[2] not in row_zeros:
            continue
        row_zero, raw = row_zeros[node.input[2]], node.output[0]
        node.input[2] = "rows_zero_u8"
        column_sums = f"{node.input[1]}_column_sums"
        if column_sums not in sums:
            w = numpy_helper.to_array(weights[node.input[1]]).astype(np.int32)
            w_zero = numpy_helper.to_array(weights[node.input[3]]).astype(np.int32) if len(node.input) > 3 else 0
            graph.initializer.append(numpy_helper.from_array((w - w_zero).sum(axis=0).astype(np.int32), column_sums))
            sums.add(column_sums)
        nodes.append(helper.make_node("Mul", [f"{row_zero}_i32", column_sums], [f"{raw}_offset"]))
        nodes.append(helper.make_node("Sub", [raw, f"{raw}_offset"], [f"{raw}_rows"]))
        for user in consumers[raw]:
            user.input[:] = [f"{raw}_rows" if name == raw else name for name in user.input]
    nodes = [onnx.NodeProto.FromString(node.SerializeToString()) for node in nodes]
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString()


def _row_quantization(x: str, quantized: str, scale: str, zero_point: str) -> list[onnx.NodeProto]:
    """``x`` quantized per row to uint8 ``quantized``, with its rows' (..., 1) float ``scale`` and
    zero point, as float (``zero_point``) and int32 (``zero_point`` + ``_i32``), as
    DynamicQuantizeLinear does per tensor."""
    low, high, span = f"{x}_rows_low", f"{x}_rows_high", f"{x}_rows_span"
    return [
        helper.make_node("ReduceMin", [x], [f"{low}_raw"], axes=[-1], keepdims=1),
        helper.make_node("Min", [f"{low}_raw", "rows_zero"], [low]),
        helper.make_node("ReduceMax", [x], [f"{high}_raw"], axes=[-1], keepdims=1),
        helper.make_node("Max", [f"{high}_raw", "rows_zero"], [high]),
        helper.make_node("Sub", [high, low], [span]),
        helper.make_node("Div", [span, "rows_top"], [f"{scale}_raw"]),
        helper.make_node("Max", [f"{scale}_raw", "rows_tiny"], [scale]),
        helper.make_node("Div", [low, scale], [f"{low}_scaled"]),
        helper.make_node("Neg", [f"{low}_scaled"], [f"{low}_negated"]),
        helper.make_node("Round", [f"{low}_negated"], [zero_point]),  # in 0..255: low <= 0 <= high
        helper.make_node("Cast", [zero_point], [f"{zero_point}_i32"], to=onnx.TensorProto.INT32),
        helper.make_node("Div", [x, scale], [f"{x}_rows_scaled"]),
        helper.make_node("Round", [f"{x}_rows_scaled"], [f"{x}_rows_rounded"]),
        helper.make_node("Add", [f"{x}_rows_rounded", zero_point], [f"{x}_rows_shifted"]),
        helper.make_node("Clip", [f"{x}_rows_shifted", "rows_zero", "rows_top"], [f"{x}_rows_clipped"]),
        helper.make_node("Cast", [f"{x}_rows_clipped"], [quantized], to=onnx.TensorProto.UINT8),
    ]
