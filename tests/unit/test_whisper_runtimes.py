"""The Whisper CTC network on every CPU runtime: ONNX fp32 equals eager on padded batches, int8 stores
every matrix as int8 per output channel and stays close, the recognizer's second pass batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from app.asr.bundle import Bundle, build_model, load_bundle, save_bundle
from app.asr.configs import WhisperCTCConfig, whisper_ctc_config
from app.asr.onnx_int8 import quantize_onnx_int8
from app.asr.slim.graphs import ctc_network
from app.asr.slim.sessions import OnnxCtcNetwork
from app.asr.torch_recognizer import build_recognizer
from app.asr.whisper.base import base_file, load_base
from app.asr.whisper.model import WhisperCTC
from tests.support import cv100_clips


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    config = whisper_ctc_config("random-whisper", tuned_layers=[3])
    _, model = build_model(config)
    torch.manual_seed(0)
    torch.nn.init.normal_(model.head.weight, std=0.2)  # a random head with confident frames
    path = save_bundle(tmp_path_factory.mktemp("m") / "w", config, model, "# random head\n")
    return load_bundle(path)


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    features = torch.randn(3, 80, 301) * 0.3
    lengths = torch.tensor([301, 200, 57])
    features[1, :, 200:] = 0
    features[2, :, 57:] = 0
    return features, lengths


def test_bundle_stores_only_what_was_trained_here(bundle: Bundle) -> None:
    from safetensors import safe_open

    with safe_open(str(bundle.path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    network = bundle.config.model
    assert isinstance(network, WhisperCTCConfig) and 0 not in network.tuned_layers
    tuned = tuple(f"encoder.blocks.{i}." for i in network.tuned_layers)
    assert keys and all(k.startswith(("head.", *tuned)) for k in keys)
    assert any(k.startswith(tuned) for k in keys)
    assert (bundle.path / "model.safetensors").stat().st_size < 12_000_000
    assert isinstance(bundle.model, WhisperCTC) and bundle.second_pass is not None


def onnx_graph(bundle: Bundle) -> bytes:
    """The served ONNX graph of the bundle's network, built from its weights (as without PyTorch)."""
    model = bundle.model
    assert isinstance(model, WhisperCTC)
    _, base = load_base(base_file(model.config.base))
    trained = {k: v.numpy() for k, v in model.trained_state().items()}
    return ctc_network(base, trained, model.config)


def run_onnx(graph: bytes, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    log_probs, out_lengths = OnnxCtcNetwork(graph)(features.numpy(), lengths.numpy())
    return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)


def test_onnx_matches_eager_on_a_padded_batch(bundle: Bundle) -> None:
    features, lengths = inputs()
    with torch.inference_mode():
        reference, ref_lengths = bundle.model(features, lengths)
    onnx_out, onnx_lengths = run_onnx(onnx_graph(bundle), features, lengths)
    assert torch.equal(ref_lengths, onnx_lengths)
    for row, n in enumerate(ref_lengths.tolist()):
        torch.testing.assert_close(onnx_out[row, :n], reference[row, :n], atol=2e-4, rtol=1e-4)


def test_int8_stores_matrices_per_output_channel_and_stays_close(bundle: Bundle) -> None:
    fp32 = onnx_graph(bundle)
    int8 = quantize_onnx_int8(fp32)
    assert len(int8) * 3 < len(fp32)
    graph = onnx.load_from_string(int8).graph
    initializers = {t.name: t for t in graph.initializer}
    dequantize = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    weighted = [n for n in graph.node if n.op_type in ("MatMul", "Conv") and n.input[1] in dequantize]
    assert len(weighted) >= 4 * 4 + 2  # per block: qkv, out, two MLP layers; plus the convolutions
    for node in weighted:
        quantized = numpy_helper.to_array(initializers[dequantize[node.input[1]].input[0]])
        scale = numpy_helper.to_array(initializers[dequantize[node.input[1]].input[1]])
        out_channels = quantized.shape[0] if node.op_type == "Conv" else quantized.shape[1]
        assert quantized.dtype == np.int8 and scale.shape == (out_channels,)
    features, lengths = inputs()
    with torch.inference_mode():
        reference, _ = bundle.model(features, lengths)
    quantized_out, _ = run_onnx(int8, features, lengths)
    agree = (reference[0].argmax(-1) == quantized_out[0].argmax(-1)).float().mean()
    assert agree > 0.9


@pytest.mark.parametrize("batch_execution", ["per_item", "padded"])
def test_second_pass_batch_equals_one_by_one(bundle: Bundle, batch_execution: str) -> None:
    clips = [audio for audio, _ in cv100_clips(2)]
    recognizer = build_recognizer(bundle, "torch", "cpu", "fp32", pads_batches=batch_execution == "padded")
    together = recognizer.second_pass(clips)
    alone = [recognizer.second_pass([clip])[0] for clip in clips]
    assert [o.text for o in together] == [o.text for o in alone] and all(o.text for o in alone)
    for a, b, ctc in zip(together, alone, recognizer.infer(clips), strict=True):
        # float32 sums in another order (a padded batch): up to 1.5e-4 on log-probs near -15, CPU-dependent
        np.testing.assert_allclose(a.log_probs, b.log_probs, atol=5e-4)
        np.testing.assert_allclose(a.log_probs, ctc, atol=5e-4)  # the CTC path's own log-probs


def test_runtimes_serve_the_network(bundle: Bundle) -> None:
    wave = np.random.default_rng(0).standard_normal(24_000).astype(np.float32) * 0.05
    eager = build_recognizer(bundle, "torch", "cpu", "fp32").infer([wave])[0]
    onnx_fp32 = build_recognizer(bundle, "onnx", "cpu", "fp32").infer([wave])[0]
    assert eager.shape == onnx_fp32.shape == (75, 29)
    np.testing.assert_allclose(eager, onnx_fp32, atol=2e-4)


def test_fine_tuned_layers_come_from_the_bundle(bundle: Bundle, tmp_path: Path) -> None:
    _, base = load_base(base_file(bundle.config.model.base))  # type: ignore[union-attr]
    model = bundle.model
    assert isinstance(model, WhisperCTC)
    assert torch.equal(
        model.encoder.blocks[0].attn.qkv.weight, torch.from_numpy(base["encoder.blocks.0.attn.qkv.weight"])
    )
    with torch.no_grad():
        model.encoder.blocks[3].mlp[0].bias.add_(1.0)
    try:
        path = save_bundle(tmp_path / "tuned", bundle.config, model, "# tuned\n")
        reloaded = load_bundle(path).model
        assert isinstance(reloaded, WhisperCTC)
        torch.testing.assert_close(reloaded.encoder.blocks[3].mlp[0].bias, model.encoder.blocks[3].mlp[0].bias)
        assert not torch.equal(
            reloaded.encoder.blocks[3].mlp[0].bias, torch.from_numpy(base["encoder.blocks.3.mlp.0.bias"])
        )
    finally:
        with torch.no_grad():
            model.encoder.blocks[3].mlp[0].bias.sub_(1.0)
