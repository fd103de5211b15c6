"""The torch-free networks against torch eager, side by side in one process on one 10 s clip.

    python -m bench.slim_networks [--model models/en-whisper-tiny] [--threads 2] [--repeats 15]

Two comparisons, each on the same log-mel features: the CTC network (ONNX graph from NumPy weights
in ONNX Runtime vs ``WhisperCTC``) and the second pass (``SlimSecondPass`` vs ``SecondPass``).
Calls alternate between the two sides so that machine noise falls on both; the figures to read
are the ratios (torch median time / ONNX Runtime median time; above 1: ONNX Runtime is faster).
Also prints the operators ONNX Runtime's optimiser leaves in each graph, to show its fusions.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from app.asr.bundle import load_bundle
from app.asr.bundle_files import read_bundle_files
from app.asr.configs import WhisperCTCConfig
from app.asr.features import WhisperLogMel
from app.asr.slim.graphs import ctc_network, decoder_step, second_pass_encoder
from app.asr.slim.second_pass import SlimSecondPass
from app.asr.slim.sessions import OnnxCtcNetwork
from app.asr.whisper.base import base_file, load_base
from bench.slim_recognizer import DATA, speech_clip


def side_by_side(torch_call: Callable[[], object], ort_call: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median seconds of each call over ``repeats`` alternating rounds (after one warm-up each)."""
    torch_call(), ort_call()
    torch_times: list[float] = []
    ort_times: list[float] = []
    for _ in range(repeats):
        for call, times in ((torch_call, torch_times), (ort_call, ort_times)):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
    torch_s, ort_s = statistics.median(torch_times), statistics.median(ort_times)
    return {"torch_s": torch_s, "onnxruntime_s": ort_s, "torch_over_onnxruntime": torch_s / ort_s}


def fused_operators(onnx_model: bytes, level: ort.GraphOptimizationLevel) -> dict[str, int]:
    """Operator counts of the graph as ONNX Runtime runs it at optimisation ``level``."""
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        options.log_severity_level = 3  # the warning that such a file is machine-specific
        ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    return dict(collections.Counter(node.op_type for node in graph.node).most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/en-whisper-tiny"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model)
    config = bundle.config.model
    if not isinstance(config, WhisperCTCConfig) or bundle.second_pass is None:
        raise SystemExit(f"{args.model} is not a Whisper CTC bundle")
    dims, base = load_base(base_file(config.base))
    trained = read_bundle_files(args.model)[1]  # float32, as the server loads them
    ctc_graph = ctc_network(base, trained, config)
    ctc = OnnxCtcNetwork(ctc_graph, args.threads)
    slim = SlimSecondPass.from_base(config, args.threads, "fp32", trained)
    clip = speech_clip(args.data, args.seconds)
    frontend = WhisperLogMel(bundle.config.frontend)  # type: ignore[arg-type]
    features, lengths = frontend(torch.from_numpy(clip)[None], torch.tensor([clip.size]))
    feats_np, lengths_np = features.numpy(), lengths.numpy()
    second = bundle.second_pass
    text = second.transcribe(features, lengths)
    print(f"second pass text: {text[0]!r} (slim equal: {slim.transcribe(feats_np, lengths_np) == text})")

    def torch_ctc() -> object:
        with torch.inference_mode():
            return bundle.model(features, lengths)

    results = {
        "ctc_network": side_by_side(torch_ctc, lambda: ctc(feats_np, lengths_np), args.repeats),
        "second_pass": side_by_side(
            lambda: second.transcribe(features, lengths), lambda: slim.transcribe(feats_np, lengths_np), args.repeats
        ),
    }
    for name, row in results.items():
        print(
            f"{name}: torch {row['torch_s'] * 1000:.1f} ms, ONNX Runtime {row['onnxruntime_s'] * 1000:.1f} ms, "
            f"torch / ONNX Runtime = {row['torch_over_onnxruntime']:.2f}"
        )
    own_length = config.second_pass_states == "own_length"
    graphs = {"ctc_network": ctc_graph, "second_pass_encoder": second_pass_encoder(base, dims, own_length=own_length)}
    graphs["decoder_step"] = decoder_step(base, dims)
    for name, graph in graphs.items():
        print(f"{name} operators as ONNX Runtime runs them (ORT_ENABLE_ALL):")
        print("   ", fused_operators(graph, ort.GraphOptimizationLevel.ORT_ENABLE_ALL))


if __name__ == "__main__":
    main()
