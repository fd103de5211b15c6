"""Runtimes: folded, ONNX and int8 networks agree with the eager model; the factory's choices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from app.asr.bundle import Bundle, load_bundle
from app.asr.onnx_int8 import quantize_onnx_int8, quantize_per_channel
from app.asr.runtimes import OnnxNetwork, export_onnx, fold_batchnorm
from app.asr.torch_recognizer import build_recognizer
from app.engine.plan import resolve_batch_execution, resolve_runtime
from tests.support import make_random_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    loaded = load_bundle(make_random_bundle(tmp_path_factory.mktemp("m") / "tiny"))
    generator = torch.Generator().manual_seed(1)
    for module in loaded.model.modules():  # give every batch norm non-trivial statistics
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.uniform_(-0.2, 0.2, generator=generator)
    return loaded


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(3, 80, 301), torch.tensor([301, 200, 57])


def test_folded_and_onnx_match_eager(bundle: Bundle) -> None:
    features, lengths = inputs()
    with torch.inference_mode():
        reference, ref_lengths = bundle.model(features, lengths)
        folded, _ = fold_batchnorm(bundle.model)(features, lengths)
    onnx_out, onnx_lengths = OnnxNetwork(export_onnx(bundle.model))(features, lengths)
    assert torch.allclose(reference, folded, atol=1e-4)
    assert torch.allclose(reference, onnx_out, atol=1e-4)
    assert torch.equal(ref_lengths, onnx_lengths)


def test_int8_is_smaller_and_close(bundle: Bundle) -> None:
    fp32 = export_onnx(bundle.model)
    int8 = quantize_onnx_int8(fp32)
    assert len(int8) * 3 < len(fp32)
    features, lengths = inputs()
    with torch.inference_mode():
        reference, _ = bundle.model(features, lengths)
    quantized, _ = OnnxNetwork(int8)(features, lengths)
    agree = (reference.argmax(-1) == quantized.argmax(-1)).float().mean()
    assert agree > 0.95


def test_int8_stores_every_convolution_weight_as_int8_per_output_channel(bundle: Bundle) -> None:
    graph = onnx.load_from_string(quantize_onnx_int8(export_onnx(bundle.model))).graph
    initializers = {t.name: t for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    dequantize = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    assert convs and all(conv.input[1] in dequantize for conv in convs)
    for conv in convs:
        node = dequantize[conv.input[1]]
        weight, scale = (numpy_helper.to_array(initializers[name]) for name in node.input[:2])
        assert weight.dtype == np.int8
        assert scale.shape == (weight.shape[0],)  # one scale per output channel
        assert [a.i for a in node.attribute if a.name == "axis"] == [0]


def test_per_channel_scales_keep_small_channels() -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 8, 3)).astype(np.float32) * np.array([1.0, 1e-3, 10.0, 0.0])[:, None, None]
    quantized, scale = quantize_per_channel(weight)
    restored = quantized.astype(np.float32) * scale[:, None, None]
    for channel in range(4):  # each channel within half a step of its own scale, the tiny one included
        assert np.abs(restored[channel] - weight[channel]).max() <= scale[channel] / 2 + 1e-9
    assert np.count_nonzero(quantized[1]) > 0
    assert not restored[3].any()


@pytest.mark.parametrize("runtime,precision", [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"), ("auto", "auto")])
def test_build_recognizer_runtimes_give_the_same_frames(bundle: Bundle, runtime: str, precision: str) -> None:
    expected = "onnx" if runtime == "auto" else runtime  # auto: ONNX Runtime for sepconv_ctc on a CPU
    if runtime == "auto":  # as the serving plan resolves it on a CPU
        runtime, precision = resolve_runtime("auto", "cpu", "fp32", bundle.config.model.type), "fp32"
    recognizer = build_recognizer(bundle, runtime=runtime, device="cpu", precision=precision)
    waves = [np.random.default_rng(i).standard_normal(16000 * (i + 1)).astype(np.float32) * 0.1 for i in range(2)]
    out = recognizer.infer(waves)
    assert [o.shape for o in out] == [(25, 29), (50, 29)]
    with torch.inference_mode():
        padded = torch.from_numpy(np.pad(waves[0], (0, 16000)))[None]
        features, frame_lengths = bundle.frontend(padded, torch.tensor([16000]))
        reference, _ = bundle.model(features, frame_lengths)
    agree = (reference[0, :25].argmax(-1).numpy() == out[0].argmax(-1)).mean()
    assert agree > (0.95 if precision == "int8" else 0.999)
    assert recognizer.runtime == expected


def test_per_item_batches_give_the_padded_batches_frames(bundle: Bundle) -> None:
    waves = [np.random.default_rng(i).standard_normal(8000 * (i + 1)).astype(np.float32) * 0.1 for i in range(3)]
    padded = build_recognizer(bundle, runtime="onnx", device="cpu", pads_batches=True)
    per_item = build_recognizer(bundle, runtime="onnx", device="cpu", pads_batches=False)
    assert padded.pads_batches and not per_item.pads_batches
    for a, b in zip(padded.infer(waves), per_item.infer(waves), strict=True):
        assert a.shape == b.shape
        assert np.allclose(a, b, atol=1e-3)


def test_batch_execution_choices() -> None:
    assert resolve_batch_execution("auto", "cpu") is False
    assert resolve_batch_execution("auto", "cuda") is True
    assert resolve_batch_execution("padded", "cpu") is True
    assert resolve_batch_execution("per_item", "cuda") is False


def test_runtime_choices_are_checked() -> None:
    assert resolve_runtime("auto", "cpu", "fp32") == "onnx"
    assert resolve_runtime("auto", "cpu", "fp32", "whisper_ctc") == "onnx"
    assert resolve_runtime("auto", "cpu", "int8", "whisper_ctc") == "onnx"
    assert resolve_runtime("auto", "cuda", "fp16") == "torch"
    with pytest.raises(RuntimeError, match="int8 needs the onnx runtime"):
        resolve_runtime("torch", "cpu", "int8")


def test_without_pytorch_only_whisper_networks_on_onnx_runtime_serve() -> None:
    assert resolve_runtime("auto", "cpu", "fp32", "whisper_ctc", torch_installed=False) == "onnx"
    assert resolve_runtime("onnx", "cpu", "int8", "whisper_ctc", torch_installed=False) == "onnx"
    with pytest.raises(RuntimeError, match="the torch runtime needs PyTorch"):
        resolve_runtime("torch", "cpu", "fp32", "whisper_ctc", torch_installed=False)
    with pytest.raises(RuntimeError, match="a sepconv_ctc network needs PyTorch"):
        resolve_runtime("auto", "cpu", "fp32", "sepconv_ctc", torch_installed=False)


@pytest.mark.slow
def test_compile_runtime(bundle: Bundle) -> None:
    recognizer = build_recognizer(bundle, runtime="compile", device="cpu", precision="fp32")
    (out,) = recognizer.infer([np.zeros(16000, np.float32)])
    assert out.shape == (25, 29)


def test_shipped_model_exports(tmp_path: Path) -> None:
    shipped = load_bundle(Path(__file__).resolve().parents[2] / "models" / "en-small")
    assert len(export_onnx(shipped.model)) > 1_000_000
