"""Whisper's layers written as ONNX nodes over NumPy weights, for graphs built without PyTorch.

Each function adds nodes to a ``GraphBuilder`` and returns the name of the value it computes.
Weights are looked up by the keys of the torch modules' state dicts (``attn.qkv.weight``, ...),
so a graph holds exactly the numbers the torch network holds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization is an operator from 17 on
LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, as Whisper uses

Weights = Mapping[str, np.ndarray]


class GraphBuilder:
    """The nodes and initializers of one ONNX graph, added op by op under fresh value names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = itertools.count()
        self._scalars: dict[tuple[str, float], str] = {}

    def fresh(self, hint: str) -> str:
        """A value name not used before in this graph."""
        return f"{hint}_{next(self._count)}"

    def constant(self, array: np.ndarray, hint: str = "const") -> str:
        """An initializer holding ``array``."""
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.require(array, requirements="C"), name))
        return name

    def scalar(self, value: float, dtype: type = np.float32) -> str:
        """A 0-d initializer (one per value and type, shared by every node that uses it)."""
        key = (np.dtype(dtype).name, float(value))
        if key not in self._scalars:
            self._scalars[key] = self.constant(np.array(value, dtype=dtype), "scalar")
        return self._scalars[key]

    def ints(self, *values: int) -> str:
        """A 1-d int64 initializer (shapes, axes, split sizes)."""
        return self.constant(np.array(values, dtype=np.int64), "ints")

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        """Add one single-output node; returns its output's name."""
        return self.multi(op_type, list(inputs), 1, **attributes)[0]

    def multi(self, op_type: str, inputs: list[str], outputs: int, **attributes: Any) -> list[str]:
        """Add one node with ``outputs`` outputs; returns their names."""
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.fresh(op_type), **attributes))
        return names

    def rename(self, value: str, name: str) -> None:
        """Expose ``value`` under ``name`` (a graph output's name)."""
        self.nodes.append(helper.make_node("Identity", [value], [name], name=self.fresh("Identity")))

    def serialize(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> bytes:
        """The checked ModelProto, serialised."""
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="app.asr.slim")
        model.ir_version = 8  # the IR of opset 17
        onnx.checker.check_model(model, full_check=False)
        return model.SerializeToString()


def tensor(name: str, elem_type: int, shape: list[str | int]) -> onnx.ValueInfoProto:
    """A graph input or output: name, element type and (symbolic) shape."""
    return helper.make_tensor_value_info(name, elem_type, shape)


FLOAT, INT32, INT64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64


def linear(b: GraphBuilder, x: str, w: Weights, prefix: str, rows_scale: tuple[int, float] | None = None) -> str:
    """``x @ weight.T + bias`` of ``torch.nn.Linear`` weights under ``prefix``.

    ``rows_scale`` (n, s) multiplies the first n output rows by s (attention's query scaling,
    folded into the weights)."""
    weight, bias = w[f"{prefix}.weight"].copy(), w[f"{prefix}.bias"].copy()
    if rows_scale is not None:
        rows, scale = rows_scale
        weight[:rows] *= scale
        bias[:rows] *= scale
    product = b.op("MatMul", x, b.constant(weight.T, prefix + ".weight_t"))
    return b.op("Add", product, b.constant(bias, prefix + ".bias"))


def layer_norm(b: GraphBuilder, x: str, w: Weights, prefix: str) -> str:
    """``torch.nn.LayerNorm`` over the last axis."""
    scale, bias = (
        b.constant(w[f"{prefix}.weight"], prefix + ".weight"),
        b.constant(w[f"{prefix}.bias"], prefix + ".bias"),
    )
    return b.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=LAYER_NORM_EPSILON)


def gelu(b: GraphBuilder, x: str) -> str:
    """Exact GELU, ``x * 0.5 * (1 + erf(x / sqrt 2))``, in the form ONNX Runtime fuses into one Gelu."""
    erf = b.op("Erf", b.op("Div", x, b.scalar(math.sqrt(2.0))))
    return b.op("Mul", b.op("Mul", x, b.op("Add", erf, b.scalar(1.0))), b.scalar(0.5))


def split_heads(b: GraphBuilder, x: str, heads: int) -> str:
    """(batch, frames, d_model) -> (batch, heads, frames, head_dim)."""
    return b.op("Transpose", b.op("Reshape", x, b.ints(0, 0, heads, -1)), perm=[0, 2, 1, 3])


def attend(b: GraphBuilder, query: str, key: str, value: str, bias: str | None) -> str:
    """Softmax attention of pre-scaled ``query`` (batch, heads, n, head_dim) over ``key`` and
    ``value`` (batch, heads, m, head_dim), with an additive ``bias`` broadcast to (batch, heads,
    n, m) (0 where allowed, -inf where not); returns (batch, n, d_model)."""
    scores = b.op("MatMul", query, b.op("Transpose", key, perm=[0, 1, 3, 2]))
    if bias is not None:
        scores = b.op("Add", scores, bias)
    attended = b.op("MatMul", b.op("Softmax", scores, axis=-1), value)
    return b.op("Reshape", b.op("Transpose", attended, perm=[0, 2, 1, 3]), b.ints(0, 0, -1))


def self_attention_qkv(b: GraphBuilder, x: str, w: Weights, prefix: str, heads: int) -> tuple[str, str, str]:
    """Query (scaled by 1/sqrt(head_dim)), key and value, each (batch, heads, frames, head_dim),
    of the fused ``qkv`` projection under ``prefix``."""
    d_model = w[f"{prefix}.qkv.weight"].shape[1]
    scale = 1.0 / math.sqrt(d_model // heads)
    qkv = linear(b, x, w, f"{prefix}.qkv", rows_scale=(d_model, scale))
    parts = b.multi("Split", [qkv, b.ints(d_model, d_model, d_model)], 3, axis=-1)
    query, key, value = (split_heads(b, part, heads) for part in parts)
    return query, key, value


def cross_query(b: GraphBuilder, x: str, w: Weights, prefix: str, heads: int) -> str:
    """Cross-attention's query (batch, heads, n, head_dim) of the block under ``prefix``, scaled by
    1/sqrt(head_dim)."""
    d_model = w[f"{prefix}.cross_attn.query.weight"].shape[0]
    query = linear(b, x, w, f"{prefix}.cross_attn.query", rows_scale=(d_model, (d_model // heads) ** -0.5))
    return split_heads(b, query, heads)


def key_value(b: GraphBuilder, states: str, w: Weights, prefix: str, heads: int) -> tuple[str, str]:
    """Cross-attention keys and values (batch, heads, frames, head_dim) of encoder ``states``."""
    d_model = w[f"{prefix}.key_value.weight"].shape[1]
    projected = linear(b, states, w, f"{prefix}.key_value")
    key, value = b.multi("Split", [projected, b.ints(d_model, d_model)], 2, axis=-1)
    return split_heads(b, key, heads), split_heads(b, value, heads)


def mlp(b: GraphBuilder, x: str, w: Weights, prefix: str) -> str:
    """d_model -> 4 d_model -> GELU -> d_model (``mlp.0`` and ``mlp.2``)."""
    return linear(b, gelu(b, linear(b, x, w, f"{prefix}.0")), w, f"{prefix}.2")


def encoder_block(
    b: GraphBuilder, x: str, w: Weights, prefix: str, heads: int, bias: str | None, valid: str | None, fused: bool
) -> str:
    """x + attention(norm(x)), then x + mlp(norm(x)); ``bias`` (additive) or, ``fused``, ``valid``
    ((batch, frames) int32, 1 on each row's frames) masks padded keys.

    ``fused`` attention is ONNX Runtime's ``MultiHeadAttention`` (``com.microsoft``), else the
    same maths in standard operators (``bench/slim_recognizer.py`` measures both).
    """
    normed = layer_norm(b, x, w, f"{prefix}.attn_ln")
    if fused:
        d_model = w[f"{prefix}.attn.qkv.weight"].shape[1]
        qkv = linear(b, normed, w, f"{prefix}.attn.qkv")
        query, key, value = b.multi("Split", [qkv, b.ints(d_model, d_model, d_model)], 3, axis=-1)
        inputs = [query, key, value, "", valid] if valid is not None else [query, key, value]
        attended = b.multi("MultiHeadAttention", inputs, 1, domain="com.microsoft", num_heads=heads)[0]
    else:
        query, key, value = self_attention_qkv(b, normed, w, f"{prefix}.attn", heads)
        attended = attend(b, query, key, value, bias)
    x = b.op("Add", x, linear(b, attended, w, f"{prefix}.attn.out"))
    return b.op("Add", x, mlp(b, layer_norm(b, x, w, f"{prefix}.mlp_ln"), w, f"{prefix}.mlp"))


def valid_frames(b: GraphBuilder, lengths: str, like: str, axis: int) -> str:
    """(batch, frames) boolean, True before each row's length; frames is ``like``'s size on ``axis``."""
    frames = b.op("Squeeze", b.op("Shape", like, start=axis, end=axis + 1), b.ints(0))
    steps = b.op("Range", b.scalar(0, np.int64), frames, b.scalar(1, np.int64))
    return b.op("Less", b.op("Unsqueeze", steps, b.ints(0)), b.op("Unsqueeze", lengths, b.ints(1)))


def additive_mask(b: GraphBuilder, allowed: str) -> str:
    """0 where ``allowed``, -inf elsewhere (float32, same shape)."""
    return b.op("Where", allowed, b.scalar(0.0), b.scalar(-math.inf))
