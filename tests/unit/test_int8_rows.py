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
    x[2, 1] = np.abs(x[2, 1])  # a row of positive values only
    x[1, 0] = 0.0  # a row of zeros
    quantized = quantize_onnx_integer(_linear_model(weight))
    per_run, per_row = cpu_session(quantized, 1), cpu_session(scale_rows_apart(quantized), 1)
    exact = x @ weight
    together = per_row.run(["y"], {"x": x})[0]
    for b in range(3):
        alone = per_row.run(["y"], {"x": x[b : b + 1]})[0][0]
        np.testing.assert_array_equal(together[b], alone)  # no row depends on another
        error = np.abs(together[b] - exact[b]).max() / np.abs(exact[b]).max()
        assert error < 0.03, error
    np.testing.assert_array_equal(together[1, 0], 0.0)
    # one scale per run: the narrow rows lose their precision to the wide one's range
    shared = per_run.run(["y"], {"x": x})[0]
    assert not np.array_equal(shared[1], per_run.run(["y"], {"x": x[1:2]})[0][0])
    assert np.abs(shared[1] - exact[1]).max() > 3 * np.abs(together[1] - exact[1]).max()


def test_only_the_activation_quantization_changes() -> None:
    weight = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    quantized = quantize_onnx_integer(_linear_model(weight))
    before = {n.op_type for n in onnx.load_from_string(quantized).graph.node}
    after = [n.op_type for n in onnx.load_from_string(scale_rows_apart(quantized)).graph.node]
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= before
    assert not {"DynamicQuantizeLinear", "MatMulInteger"} & set(after)
    assert after.count("MatMulIntegerToFloat") == 1 and "ReduceMax" in after


def test_a_row_is_rounded_to_half_a_step_of_its_own_scale() -> None:
    """Symmetric scales (peak / 127 around zero point 128): through an identity weight (stored
    exactly in int8) each element comes back within half a step of its row's scale, for a row of
    one sign (as after a GELU), a row of tiny values and a row of zeros alike."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 1, 64)).astype(np.float32)
    x[0] = np.abs(x[0])
    x[2] *= 1e-3
    x[3] = 0.0
    quantized = scale_rows_apart(quantize_onnx_integer(_linear_model(np.eye(64, dtype=np.float32))))
    y = cpu_session(quantized, 1).run(["y"], {"x": x})[0]
    for row in range(4):
        half_step = np.abs(x[row]).max() / 127.0 / 2
        assert np.abs(y[row] - x[row]).max() <= half_step * 1.0001
