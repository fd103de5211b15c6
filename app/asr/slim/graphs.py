"""The default model's networks as ONNX graphs built from NumPy weights (no PyTorch, no export).

Three graphs, each the same maths as its torch module in eval mode:

- ``ctc_network``: the served encoder at each clip's own length plus the CTC head
  (``app.asr.whisper.model.WhisperCTC``);
- ``second_pass_encoder``: the untouched pretrained encoder on the 30 s window or at the clip's own
  length, and every decoder layer's cross-attention keys and values (``SecondPass.encoder`` +
  ``WhisperDecoder.cross_keys``);
- ``decoder_step``: one step of the text decoder with a self-attention key/value cache
  (``WhisperDecoder.forward``), returning the last position's logits.
"""

from __future__ import annotations

import numpy as np

from app.asr.configs import WhisperCTCConfig
from app.asr.slim.onnx_ops import (
    FLOAT,
    INT32,
    INT64,
    GraphBuilder,
    Weights,
    additive_mask,
    attend,
    cross_query,
    encoder_block,
    gelu,
    key_value,
    layer_norm,
    linear,
    mlp,
    self_attention_qkv,
    tensor,
    valid_frames,
)
from app.asr.whisper.weights import WhisperDims, part

FUSED_ATTENTION = True
"""The encoders' attention is ONNX Runtime's fused ``MultiHeadAttention``: equal within 2e-4 to
standard operators, 1.2x faster on the second pass's 30 s window and 1.01x on a 10 s clip
(docs/benchmarks.md, "The slim CPU path")."""


def _conv(b: GraphBuilder, x: str, w: Weights, prefix: str, stride: int) -> str:
    """``torch.nn.Conv1d`` with kernel 3 and padding 1."""
    weight, bias = (
        b.constant(w[f"{prefix}.weight"], prefix + ".weight"),
        b.constant(w[f"{prefix}.bias"], prefix + ".bias"),
    )
    return b.op("Conv", x, weight, bias, kernel_shape=[3], pads=[1, 1], strides=[stride])


def _encoder(b: GraphBuilder, features: str, lengths: str | None, w: Weights, heads: int, fused: bool) -> str:
    """Encoder states (batch, ceil(frames / 2), d_model) of ``features`` (batch, n_mels, frames).

    With ``lengths`` (batch,), the first convolution's output is zeroed past each row's length and
    the blocks attend only to each row's valid frames, so a row gives the same states alone or in a
    padded batch (``WhisperEncoder.stem``); without, every frame is valid.
    """
    x = gelu(b, _conv(b, features, w, "conv1", 1))
    bias = valid = None
    if lengths is not None:
        x = b.op("Mul", x, b.op("Cast", b.op("Unsqueeze", valid_frames(b, lengths, x, 2), b.ints(1)), to=FLOAT))
    x = b.op("Transpose", gelu(b, _conv(b, x, w, "conv2", 2)), perm=[0, 2, 1])  # (batch, frames_out, d_model)
    frames_out = b.op("Shape", x, start=1, end=2)
    x = b.op("Add", x, b.op("Slice", b.constant(w["positions"], "positions"), b.ints(0), frames_out, b.ints(0)))
    if lengths is not None:
        out_lengths = b.op("Div", b.op("Add", lengths, b.scalar(1, np.int64)), b.scalar(2, np.int64))
        b.rename(out_lengths, "out_lengths")
        frames = valid_frames(b, out_lengths, x, 1)  # (batch, frames_out)
        if fused:
            valid = b.op("Cast", frames, to=INT32)
        else:
            bias = additive_mask(b, b.op("Unsqueeze", frames, b.ints(1, 2)))  # (batch, 1, 1, frames_out)
    blocks = sorted({int(k.split(".")[1]) for k in w if k.startswith("blocks.")})
    for i in blocks:
        x = encoder_block(b, x, w, f"blocks.{i}", heads, bias, valid, fused)
    return layer_norm(b, x, w, "ln_post")


def ctc_network(
    base: dict[str, np.ndarray], trained: dict[str, np.ndarray], config: WhisperCTCConfig, fused: bool = FUSED_ATTENTION
) -> bytes:
    """The served CTC network (``WhisperCTC``) as a serialised ONNX model.

    ``base`` holds the pretrained weights (keys ``encoder.*``), ``trained`` the bundle's own
    (``head.*`` and the fine-tuned ``encoder.blocks.<i>.*``), which replace the base's.

    Inputs: ``features`` (batch, n_mels, frames) float32, zero past each row's length, and
    ``lengths`` (batch,) int64. Outputs: ``log_probs`` (batch, ceil(frames / 2), vocab) float32
    and ``out_lengths`` (batch,) int64, ``(lengths + 1) // 2``.
    """
    weights = {**base, **trained}
    encoder = part(weights, "encoder")
    b = GraphBuilder()
    states = _encoder(b, "features", "lengths", encoder, config.heads, fused)
    b.rename(b.op("LogSoftmax", linear(b, states, weights, "head"), axis=-1), "log_probs")
    return b.serialize(
        "whisper_ctc",
        [tensor("features", FLOAT, ["batch", config.n_mels, "frames"]), tensor("lengths", INT64, ["batch"])],
        [
            tensor("log_probs", FLOAT, ["batch", "frames_out", config.vocab_size]),
            tensor("out_lengths", INT64, ["batch"]),
        ],
    )


def cache_names(layers: int, kind: str) -> list[str]:
    """``<kind>_key_<i>``, ``<kind>_value_<i>`` for each decoder layer, in that order (kind: past,
    present or cross)."""
    return [f"{kind}_{which}_{i}" for i in range(layers) for which in ("key", "value")]


def second_pass_encoder(
    base: dict[str, np.ndarray], dims: WhisperDims, fused: bool = FUSED_ATTENTION, own_length: bool = False
) -> bytes:
    """The pretrained encoder, folded into each decoder layer's cross-attention keys and values, as
    a serialised ONNX model.

    Input: ``features`` (batch, n_mels, frames) float32: the 30 s window (3000 frames, zero-padded),
    or with ``own_length`` each clip at its own length, zero past ``lengths`` (batch,) int64 (a
    second input), the blocks masked as the CTC path's are. Outputs: ``cross_key_<i>``,
    ``cross_value_<i>`` (batch, heads, frames / 2, head_dim) per layer, and with ``own_length``
    ``out_lengths`` (batch,) int64, the valid frames of each row.
    """
    b = GraphBuilder()
    states = _encoder(b, "features", "lengths" if own_length else None, part(base, "encoder"), dims.heads, fused)
    decoder = part(base, "decoder")
    names = cache_names(dims.decoder_layers, "cross")
    for i in range(dims.decoder_layers):
        key, value = key_value(b, states, decoder, f"blocks.{i}.cross_attn", dims.heads)
        b.rename(key, names[2 * i])
        b.rename(value, names[2 * i + 1])
    head_dim = dims.d_model // dims.heads
    inputs = [tensor("features", FLOAT, ["batch", dims.n_mels, "frames"])]
    outputs = [tensor(name, FLOAT, ["batch", dims.heads, "frames_out", head_dim]) for name in names]
    if own_length:
        inputs.append(tensor("lengths", INT64, ["batch"]))
        outputs.append(tensor("out_lengths", INT64, ["batch"]))
    return b.serialize("whisper_second_pass_encoder", inputs, outputs)


def _causal_bias(b: GraphBuilder, offset: str, count: str) -> str:
    """(n, past + n) additive mask: new token i (position offset + i) sees keys at positions up to its own."""
    start, stop = b.op("Squeeze", offset, b.ints(0)), b.op("Squeeze", b.op("Add", offset, count), b.ints(0))
    one = b.scalar(1, np.int64)
    keys = b.op("Unsqueeze", b.op("Range", b.scalar(0, np.int64), stop, one), b.ints(0))
    queries = b.op("Unsqueeze", b.op("Range", start, stop, one), b.ints(1))
    return additive_mask(b, b.op("LessOrEqual", keys, queries))


def _decoder_block(
    b: GraphBuilder, x: str, w: Weights, i: int, heads: int, bias: str, cross_bias: str | None
) -> tuple[str, str, str]:
    """One decoder block on the new positions; returns x and the present keys and values."""
    prefix = f"blocks.{i}"
    query, key, value = self_attention_qkv(b, layer_norm(b, x, w, f"{prefix}.attn_ln"), w, f"{prefix}.attn", heads)
    key = b.op("Concat", f"past_key_{i}", key, axis=2)
    value = b.op("Concat", f"past_value_{i}", value, axis=2)
    x = b.op("Add", x, linear(b, attend(b, query, key, value, bias), w, f"{prefix}.attn.out"))
    # several sequences per row of cross keys (a beam search's hypotheses): their positions become
    # one row's queries, so the keys and values are read once per row, not once per sequence
    normed = layer_norm(b, x, w, f"{prefix}.cross_attn_ln")
    rows = b.op("Shape", f"cross_key_{i}", start=0, end=1)
    folded = b.op(
        "Reshape", normed, b.op("Concat", rows, b.ints(-1, w[f"{prefix}.cross_attn.query.weight"].shape[0]), axis=0)
    )
    cross = attend(b, cross_query(b, folded, w, prefix, heads), f"cross_key_{i}", f"cross_value_{i}", cross_bias)
    cross = b.op("Reshape", cross, b.op("Shape", x))
    x = b.op("Add", x, linear(b, cross, w, f"{prefix}.cross_attn.out"))
    x = b.op("Add", x, mlp(b, layer_norm(b, x, w, f"{prefix}.mlp_ln"), w, f"{prefix}.mlp"))
    return x, key, value


def decoder_step(base: dict[str, np.ndarray], dims: WhisperDims, cross_masked: bool = False) -> bytes:
    """One step of the pretrained text decoder as a serialised ONNX model.

    Inputs: ``tokens`` (batch, n) int64, the new tokens at positions past..past + n;
    ``past_key_<i>``, ``past_value_<i>`` (batch, heads, past, head_dim), the self-attention keys
    and values of the earlier positions (past may be 0); ``cross_key_<i>``, ``cross_value_<i>``
    (rows, heads, frames, head_dim) from ``second_pass_encoder``, where ``batch`` is a multiple of
    ``rows``: sequences ``r * k .. r * k + k - 1`` read row ``r`` (a beam search's hypotheses);
    with ``cross_masked`` (rows of their own lengths), ``cross_bias`` (rows, 1, 1, frames) float32,
    0 on each row's valid frames and -inf past them (the 30 s window needs none: every frame counts).
    ``logit_bias`` (vocab,) float32, added to the logits: -inf on the tokens the step suppresses;
    ``top_k`` (1,) int64 and ``end_token`` (1,) int64.
    Outputs: ``logits`` (batch, vocab) float32 of the token after the last new one; from the
    log-softmax of the logits plus ``logit_bias``, the ``top_k`` likeliest tokens best first
    (``top_tokens`` (batch, k) int64, ties in token order, and ``top_log_probs`` (batch, k)) and
    ``end_log_prob`` (batch, 1), the log-prob of ``end_token`` (``app.asr.whisper.greedy.TopTokens``);
    ``present_key_<i>``, ``present_value_<i>`` (batch, heads, past + n, head_dim).
    """
    w = part(base, "decoder")
    b = GraphBuilder()
    embedding = b.constant(w["token_embedding.weight"], "token_embedding")
    offset, count = b.op("Shape", "past_key_0", start=2, end=3), b.op("Shape", "tokens", start=1, end=2)
    positions = b.op("Slice", b.constant(w["positions"], "positions"), offset, b.op("Add", offset, count), b.ints(0))
    x = b.op("Add", b.op("Gather", embedding, "tokens", axis=0), positions)
    bias = _causal_bias(b, offset, count)
    presents = cache_names(dims.decoder_layers, "present")
    for i in range(dims.decoder_layers):
        x, key, value = _decoder_block(b, x, w, i, dims.heads, bias, "cross_bias" if cross_masked else None)
        b.rename(key, presents[2 * i])
        b.rename(value, presents[2 * i + 1])
    last = layer_norm(b, b.op("Gather", x, b.scalar(-1, np.int64), axis=1), w, "ln")  # (batch, d_model)
    logits = b.op("Gemm", last, embedding, transB=1)
    b.rename(logits, "logits")
    # log-probs without a log-softmax over the vocabulary (ReduceLogSumExp and Sub took about 4x
    # the time of these ops): the top tokens of the biased logits, and the normaliser from the best
    # token's probability (at least 1 / vocab, so its logarithm keeps float32's precision)
    biased = b.op("Add", logits, "logit_bias")
    top_logits, top_tokens = b.multi("TopK", [biased, "top_k"], 2, axis=-1, largest=1, sorted=1)
    best = b.op("Slice", top_tokens, b.ints(0), b.ints(1), b.ints(1))
    best_prob = b.op("GatherElements", b.op("Softmax", biased, axis=-1), best, axis=1)
    normaliser = b.op("Sub", b.op("Slice", top_logits, b.ints(0), b.ints(1), b.ints(1)), b.op("Log", best_prob))
    b.rename(b.op("Sub", top_logits, normaliser), "top_log_probs")
    b.rename(top_tokens, "top_tokens")
    b.rename(b.op("Sub", b.op("Gather", biased, "end_token", axis=1), normaliser), "end_log_prob")
    head_dim = dims.d_model // dims.heads
    cache: list[str | int] = ["batch", dims.heads, "past", head_dim]
    inputs = [tensor("tokens", INT64, ["batch", "n"])]
    inputs += [tensor(name, FLOAT, cache) for name in cache_names(dims.decoder_layers, "past")]
    inputs += [
        tensor(name, FLOAT, ["rows", dims.heads, "frames", head_dim])
        for name in cache_names(dims.decoder_layers, "cross")
    ]
    if cross_masked:
        inputs.append(tensor("cross_bias", FLOAT, ["rows", 1, 1, "frames"]))
    inputs += [tensor("logit_bias", FLOAT, [dims.vocab_size]), tensor("top_k", INT64, [1])]
    inputs.append(tensor("end_token", INT64, [1]))
    outputs = [tensor("logits", FLOAT, ["batch", dims.vocab_size])]
    outputs += [tensor("top_log_probs", FLOAT, ["batch", "k"]), tensor("top_tokens", INT64, ["batch", "k"])]
    outputs.append(tensor("end_log_prob", FLOAT, ["batch", 1]))
    outputs += [tensor(name, FLOAT, ["batch", dims.heads, "total", head_dim]) for name in presents]
    return b.serialize("whisper_decoder_step", inputs, outputs)
