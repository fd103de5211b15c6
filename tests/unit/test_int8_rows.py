"""Integer matrix products with one activation scale per row (``app.asr.onnx_int8.scale_rows_apart``)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.asr.onnx_int8 import quantize_onnx_integer, scale_rows_apart
from app.asr.slim.sessions import cpu_session


def _linear_model(weight: np.ndarray) -> bytes:
    """y = x @ weight for x (batch, n, k)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n", weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "n", weight.shape[1]])],
        [numpy_helper.from_array(weight, "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_each_row_is_quantized_on_its_own_range() -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 32)).astype(np.float32)
    x = rng.standard_normal((3, 2, 64)).astype(np.float32)
    x[0] *= 50.0  # a row with a wide range beside rows with narrow ones
    x[2, 1] = np.abs(x[2, 1])  # a row of positive values only (its range is widened to 0)
    quantized = quantize_onnx_integer(_linear_model(weight))
    per_run, per_row = cpu_session(quantized, 1), cpu_session(scale_rows_apart(quantized), 1)
    exact = x @ weight
    together = per_row.run(["y"], {"x": x})[0]
    for b in range(3):
        alone = per_row.run(["y"], {"x": x[b : b + 1]})[0][0]
        np.testing.assert_array_equal(together[b], alone)  # no row depends on another
        error = np.abs(together[b] - exact[b]).max() / np.abs(exact[b]).max()
        assert error < 0.03, error
    # one scale per run: the narrow rows lose their precision to the wide one's range
    shared = per_run.run(["y"], {"x": x})[0]
    assert not np.array_equal(shared[1], per_run.run(["y"], {"x": x[1:2]})[0][0])
    assert np.abs(shared[1] - exact[1]).max() > 3 * np.abs(together[1] - exact[1]).max()


def test_only_the_activation_quantization_changes() -> None:
    weight = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    quantized = quantize_onnx_integer(_linear_model(weight))
    before = {n.op_type for n in onnx.load_from_string(quantized).graph.node}
    after = [n.op_type for n in onnx.load_from_string(scale_rows_apart(quantized)).graph.node]
    assert "DynamicQuantizeLinear" in before and "DynamicQuantizeLinear" not in after
    assert after.count("MatMulInteger") == 1 and {"ReduceMin", "ReduceMax"} <= set(after)
