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

    Each ``DynamicQuantizeLinear`` becomes a symmetric uint8 quantization per row (its scale
    ``max |row| / 127``, zero point 128, so no row needs a zero point of its own: ONNX Runtime's
    integer product takes one for its whole left input). Each integer product with its scaling
    (``MatMulInteger``, ``Cast``, ``Mul``) becomes one ONNX Runtime ``MatMulIntegerToFloat`` with
    activation scale 1 and the weights' scales over 127, times each row's peak. Nine operators
    per quantized input where one scale per run needs one fused operator: a decoder step of 4
    sequences takes 1.55x the time of per-run scales, a 10 s clip's second pass 1.05x alone and
    1.03x in batches of 16 (``docs/benchmarks.md``).
    """
    model = onnx.load_from_string(onnx_model)
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: i for i, node in enumerate(graph.node) for output in node.output}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    constants: dict[str, np.ndarray] = {
        "rows_top": np.array(127.0, np.float32),
        "rows_tiny": np.array(1e-30, np.float32),
        "rows_shift": np.array(128.5, np.float32),  # the zero point, and a half for rounding by Cast
        "rows_zero_point": np.array(128, np.uint8),
        "rows_one": np.array(1.0, np.float32),
    }
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    quantizers = {node.output[0]: node for node in graph.node if node.op_type == "DynamicQuantizeLinear"}
    replaced: set[int] = set()  # the nodes (by index) a fused product replaces
    weight_scales: set[str] = set()
    products: dict[int, list[onnx.NodeProto]] = {}  # a product's last node (by index): what replaces it
    nodes = list(graph.node)
    for i, node in enumerate(nodes):
        if node.op_type != "MatMulInteger" or node.input[0] not in quantizers:
            continue
        quantizer = quantizers[node.input[0]]
        (cast,) = consumers[node.output[0]]
        (scaling,) = consumers[nodes[cast].output[0]]  # Mul(cast, activation scale x weight scale)
        (scales,) = (producers[name] for name in nodes[scaling].input if name != nodes[cast].output[0])
        weight_scale = next(name for name in nodes[scales].input if name != quantizer.output[1])
        weight_scales.add(weight_scale)
        over_top = f"{weight_scale}_over_127"
        if over_top not in weights:
            scale = numpy_helper.to_array(weights[weight_scale]) / np.float32(127.0)
            weights[over_top] = numpy_helper.from_array(scale.astype(np.float32), over_top)
            graph.initializer.append(weights[over_top])
        inputs = [node.input[0], node.input[1], "rows_one", over_top, "rows_zero_point", *node.input[3:4]]
        output = nodes[scaling].output[0]
        products[scaling] = [
            helper.make_node("MatMulIntegerToFloat", inputs, [f"{output}_rows_unscaled"], domain="com.microsoft"),
            helper.make_node("Mul", [f"{output}_rows_unscaled", f"{quantizer.input[0]}_rows_peak"], [output]),
        ]
        replaced.update({i, cast, scales})
    rewritten: list[onnx.NodeProto] = []
    for i, node in enumerate(nodes):
        if node.op_type == "DynamicQuantizeLinear":
            rewritten += _row_quantization(node.input[0], node.output[0])
        elif i in products:
            rewritten += products[i]
        elif i not in replaced:
            rewritten.append(onnx.NodeProto.FromString(node.SerializeToString()))
    del graph.node[:]
    graph.node.extend(rewritten)
    used = {name for node in rewritten for name in node.input}
    for name in weight_scales - used:  # the weights' scales now stored over 127
        graph.initializer.remove(weights[name])
    return model.SerializeToString()


def _row_quantization(x: str, quantized: str) -> list[onnx.NodeProto]:
    """``x`` quantized per row to uint8 ``quantized`` around 128, and its rows' (..., 1) peaks
    ``max |row|`` (``x`` + ``_rows_peak``; the row's scale is its peak over 127)."""
    peak, inverse = f"{x}_rows_peak", f"{x}_rows_inverse"
    return [
        helper.make_node("Abs", [x], [f"{x}_rows_abs"]),
        helper.make_node("ReduceMax", [f"{x}_rows_abs"], [f"{peak}_raw"], axes=[-1], keepdims=1),
        helper.make_node("Max", [f"{peak}_raw", "rows_tiny"], [peak]),
        helper.make_node("Div", ["rows_top", peak], [inverse]),
        helper.make_node("Mul", [x, inverse], [f"{x}_rows_scaled"]),  # in -127..127
        helper.make_node("Add", [f"{x}_rows_scaled", "rows_shift"], [f"{x}_rows_shifted"]),
        helper.make_node("Cast", [f"{x}_rows_shifted"], [quantized], to=onnx.TensorProto.UINT8),  # truncates
    ]
