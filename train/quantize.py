"""ONNX export and int8 quantisation of a bundle's acoustic model.

The feature frontend stays in PyTorch; the ONNX graph maps features to log-probabilities::

    features (batch, n_mels, frames) float32, lengths (batch,) int64
        -> log_probs (batch, frames_out, vocab) float32, out_lengths (batch,) int64

Int8 uses ONNX Runtime's dynamic quantisation (int8 weights, one scale per tensor; activations
quantised per batch at run time), which needs no calibration data. The depthwise convolutions hold
about 3 % of the weights and are left in float32.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import Tensor

from app.asr.bundle import load_bundle
from app.asr.model import SepConvCTC

logger = logging.getLogger(__name__)

ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"


def export_onnx(model: SepConvCTC, path: Path, opset: int = 17) -> Path:
    """Export ``model`` (eval mode) with dynamic batch and time axes."""
    model = model.eval()
    n_mels = model.config.n_mels
    example = (torch.randn(1, n_mels, 200), torch.tensor([200]))
    axes = {
        "features": {0: "batch", 2: "frames"},
        "lengths": {0: "batch"},
        "log_probs": {0: "batch", 1: "frames_out"},
        "out_lengths": {0: "batch"},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=["features", "lengths"],
            output_names=["log_probs", "out_lengths"],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return path


def depthwise_nodes(path: Path) -> list[str]:
    """Names of the grouped (depthwise) Conv nodes: few weights each, kept in float32."""
    graph = onnx.load(str(path)).graph
    names = []
    for node in graph.node:
        groups = [a.i for a in node.attribute if a.name == "group"]
        if node.op_type == "Conv" and groups and groups[0] > 1:
            names.append(node.name)
    return names


def quantize_int8(fp32_path: Path, int8_path: Path) -> Path:
    """Dynamic int8 quantisation of the pointwise Conv weights (one scale per tensor: ConvInteger)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # silence ONNX Runtime's advice to pre-process the graph
    try:
        quantize_dynamic(
            str(fp32_path),
            str(int8_path),
            weight_type=QuantType.QInt8,
            nodes_to_exclude=depthwise_nodes(fp32_path),
        )
    finally:
        root.setLevel(level)
    return int8_path


class OnnxModel:
    """An ONNX Runtime session with the acoustic model's call signature."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        log_probs, out_lengths = self.session.run(
            None, {"features": features.cpu().numpy().astype(np.float32), "lengths": lengths.cpu().numpy()}
        )
        return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)


def main(argv: list[str] | None = None) -> None:
    """Write ``model.int8.onnx`` (and with --fp32 ``model.onnx``) into a bundle folder (or --out)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="folder for the ONNX files (default: the bundle)")
    parser.add_argument("--fp32", action="store_true", help="keep the float32 ONNX model too")
    args = parser.parse_args(argv)
    out = args.out or args.bundle
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(args.bundle)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(bundle.model, Path(tmp) / ONNX_FP32)
        int8 = quantize_int8(fp32, out / ONNX_INT8)
        logger.info("fp32 %.2f MB, int8 %.2f MB", fp32.stat().st_size / 1e6, int8.stat().st_size / 1e6)
        if args.fp32:
            shutil.copy(fp32, out / ONNX_FP32)


if __name__ == "__main__":
    main()
