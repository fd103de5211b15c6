"""What int8 costs and saves on the default model, side by side in one process (2 threads).

    python -m bench.int8 ctc [--limit 120]           # the CTC network quantized several ways
    python -m bench.int8 second-pass [--limit 120]   # the served second pass in fp32 and int8
    python -m bench.int8 batch [--clips 16]          # the second pass: a batch against one at a time

``ctc``: seconds per 10 s clip (cv100 joined and cut, after a warm-up) and greedy WER on the dev
sets of the CTC network in fp32, with int8 weights and float arithmetic (the convolutional
network's int8), and with integer matrix products (ONNX Runtime's dynamic quantization) with and
without integer convolutions, per-tensor or per-channel weight scales, the CTC head integer or
float. ``second-pass``: dev WER and seconds of the served second pass (CTC network in int8) in
fp32 and int8. ``batch``: the second pass's seconds per clip, one clip at a time against all in
one batch (or in batches of ``--batch``), with the share of its encoder and decoder runs, and how
many clips get the same text both ways. Dev sets only: choices are made here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import onnx

from app.asr.configs import WhisperCTCConfig, WhisperFrontendConfig
from app.asr.ctc import GreedyDecoder
from app.asr.onnx_int8 import quantize_onnx_int8, quantize_onnx_integer
from app.asr.slim.bundle import load_whisper_bundle
from app.asr.slim.frontend import NumpyWhisperLogMel
from app.asr.slim.graphs import ctc_network
from app.asr.slim.recognizer import SlimRecognizer
from app.asr.slim.sessions import OnnxCtcNetwork
from app.asr.text import spoken_form
from app.asr.whisper.base import base_file, load_base
from bench.peers_accuracy import load_set, speed_clips
from bench.report import ROOT
from train.data.audio_io import read_audio

MODEL = ROOT / "models" / "en-whisper-tiny"
DEV = [ROOT / "data" / "manifests" / f"{name}_dev.jsonl" for name in ("synth", "so762", "piper")]


def dev_set(manifest: Path, limit: int) -> list[tuple[np.ndarray, str]]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()][:limit]
    return [(read_audio(manifest.parent / row["audio"]), spoken_form(row["text"])) for row in rows]


def _with_integer_convolutions(graph: bytes) -> bytes:
    """ONNX Runtime's dynamic quantization with its default operators (convolutions too)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "a.onnx", Path(folder) / "b.onnx"
        source.write_bytes(graph)
        options = {"DefaultTensorType": onnx.TensorProto.FLOAT}
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, extra_options=options)
        return target.read_bytes()


def ctc(args: argparse.Namespace) -> dict[str, Any]:
    config, _, trained = load_whisper_bundle(args.model)
    model, front = config.model, config.frontend
    if not isinstance(model, WhisperCTCConfig) or not isinstance(front, WhisperFrontendConfig):
        raise SystemExit(f"{args.model} is not a Whisper bundle")
    _, base = load_base(base_file(model.base))
    graph = ctc_network(base, trained, model)
    ways: dict[str, Callable[[], bytes]] = {
        "fp32": lambda: graph,
        "int8 weights, float arithmetic": lambda: quantize_onnx_int8(graph),
        "integer, convolutions too, per tensor": lambda: _with_integer_convolutions(graph),
        "integer matrix products, per tensor": lambda: quantize_onnx_integer(graph),
        "integer matrix products, per tensor, head float": lambda: quantize_onnx_integer(
            graph, float_weights=("head.",)
        ),
        "integer matrix products, per channel": lambda: quantize_onnx_integer(graph, per_channel=True),
        "integer matrix products, per channel, head float (served)": lambda: quantize_onnx_integer(
            graph, per_channel=True, float_weights=("head.",)
        ),
    }
    networks = {name: OnnxCtcNetwork(make(), args.threads) for name, make in ways.items()}
    frontend = NumpyWhisperLogMel(front)
    clips = speed_clips(load_set("cv100", args.data, None), args.clips)
    features = [frontend(clip[None], np.array([clip.size])) for clip in clips]
    for network in networks.values():
        network(*features[0])
    seconds: dict[str, list[float]] = {name: [] for name in networks}
    for _ in range(args.rounds):  # alternating, so a busy spell of the machine hits every way
        for name, network in networks.items():
            started = time.perf_counter()
            for feats, lengths in features:
                network(feats, lengths)
            seconds[name].append((time.perf_counter() - started) / len(features))
    greedy = GreedyDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)
    wer: dict[str, dict[str, float]] = {name: {} for name in networks}
    for manifest in args.dev:
        utterances = dev_set(manifest, args.limit)
        texts: dict[str, list[str]] = {name: [] for name in networks}
        for audio, _ in utterances:
            feats, lengths = frontend(audio[None], np.array([audio.size]))
            for name, network in networks.items():
                log_probs, out = network(feats, lengths)
                texts[name].append(spoken_form(greedy.decode(log_probs[0, : out[0]]).text))
        references = [text for _, text in utterances]
        for name in networks:
            wer[name][manifest.stem] = round(100 * jiwer.wer(references, texts[name]), 2)
    return {
        name: {"s_per_10s_clip": round(min(seconds[name]), 4), "size_mb": round(networks[name].size_bytes / 1e6, 1)}
        | {"greedy_wer_percent": wer[name]}
        for name in networks
    }


def second_pass(args: argparse.Namespace) -> dict[str, Any]:
    systems = {
        precision: SlimRecognizer.load(args.model, "int8", args.threads, second_pass_precision=precision)
        for precision in ("fp32", "int8")
    }
    result: dict[str, Any] = {name: {"wer_percent": {}, "seconds": 0.0} for name in systems}
    for manifest in args.dev:
        utterances = dev_set(manifest, args.limit)
        texts: dict[str, list[str]] = {name: [] for name in systems}
        for audio, _ in utterances:
            for name, recognizer in systems.items():
                started = time.perf_counter()
                texts[name].append(spoken_form(recognizer.second_pass([audio])[0].text))
                result[name]["seconds"] += time.perf_counter() - started
        references = [text for _, text in utterances]
        for name in systems:
            result[name]["wer_percent"][manifest.stem] = round(100 * jiwer.wer(references, texts[name]), 2)
    for name in systems:
        scores = result[name]["wer_percent"].values()
        result[name]["mean_wer_percent"] = round(sum(scores) / len(scores), 2)
        result[name]["seconds"] = round(result[name]["seconds"], 1)
    return result


class _Timed:
    """An ONNX Runtime session whose runs are timed."""

    def __init__(self, session: Any) -> None:
        self.session, self.seconds = session, 0.0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.session.run(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def batch(args: argparse.Namespace) -> dict[str, Any]:
    recognizer = SlimRecognizer.load(args.model, "int8", args.threads)
    passes = recognizer.passes
    encoder, decoder = _Timed(passes.encoder), _Timed(passes.decoder)
    passes.encoder, passes.decoder = encoder, decoder
    clips = speed_clips(load_set("cv100", args.data, None), args.clips)
    recognizer.second_pass(clips[:1])
    result: dict[str, Any] = {}
    texts = {}
    batched_size = args.batch or len(clips)
    for size in (1, batched_size):
        encoder.seconds = decoder.seconds = 0.0
        started = time.perf_counter()
        batches = [clips[first : first + size] for first in range(0, len(clips), size)]
        texts[size] = [out.text for group in batches for out in recognizer.second_pass(group)]
        total = time.perf_counter() - started
        result[f"batch of {size}"] = {
            "s_per_clip": round(total / len(clips), 3),
            "encoder_s_per_clip": round(encoder.seconds / len(clips), 3),
            "decoder_s_per_clip": round(decoder.seconds / len(clips), 3),
        }
    same = sum(a == b for a, b in zip(texts[1], texts[batched_size], strict=True))
    result["same text alone and batched"] = f"{same} of {len(clips)}"
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["ctc", "second-pass", "batch"])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--dev", type=Path, nargs="+", default=DEV, help="dev manifests (never a test set)")
    parser.add_argument("--limit", type=int, default=120, help="first N utterances of each dev set")
    parser.add_argument("--clips", type=int, default=16, help="10 s clips timed")
    parser.add_argument("--batch", type=int, default=0, help="batch: clips per batch (0: all in one)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (ctc; the fastest counts)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    run = {"ctc": ctc, "second-pass": second_pass, "batch": batch}[args.what]
    result = run(args)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
