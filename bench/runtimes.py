"""Single-stream speed of each runtime: 10 s clips, one at a time, features and decoding included.

    python -m bench.runtimes [--model models/en-small] [--threads 2] [--repeats 20]

Prints a markdown table and writes bench/results/runtimes.json. Speed is "x real time" (audio
seconds per wall-clock second); compare rows of one run with each other, not across runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.asr.bundle import Bundle, load_bundle
from app.asr.ctc import GreedyDecoder
from app.asr.recognizer import Recognizer
from app.asr.torch_recognizer import TorchRecognizer, build_recognizer
from app.process import tune_malloc

CONFIGS = [  # (label, runtime, precision)
    ("torch eager, unfolded", "eager", "fp32"),
    ("torch eager, batch norm folded", "torch", "fp32"),
    ("torch.compile", "compile", "fp32"),
    ("ONNX Runtime fp32", "onnx", "fp32"),
    ("ONNX Runtime int8 weights", "onnx", "int8"),
]


def make_recognizer(bundle: Bundle, runtime: str, precision: str, threads: int) -> Recognizer:
    if runtime == "eager":
        return TorchRecognizer(bundle, device="cpu", precision=precision)
    return build_recognizer(bundle, runtime=runtime, device="cpu", precision=precision, num_threads=threads)


def speed(recognizer: Recognizer, clip: np.ndarray, repeats: int) -> dict[str, float]:
    """Median and best x-real-time over ``repeats`` single-clip transcriptions (after warm-up)."""
    config = recognizer.config
    decoder = GreedyDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)
    for _ in range(3):
        decoder.decode(recognizer.infer([clip])[0])
    seconds = clip.shape[0] / config.sample_rate
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        decoder.decode(recognizer.infer([clip])[0])
        times.append(time.perf_counter() - started)
    return {"median_x_real_time": seconds / statistics.median(times), "best_x_real_time": seconds / min(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/en-small"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip", nargs="*", default=[], help="runtimes to skip, e.g. compile")
    parser.add_argument("--out", type=Path, default=Path("bench/results/runtimes.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()  # as the server does by default
    bundle = load_bundle(args.model)
    clip = (0.1 * np.random.default_rng(0).standard_normal(int(args.seconds * bundle.config.sample_rate))).astype(
        np.float32
    )
    rows: list[dict[str, Any]] = []
    for label, runtime, precision in CONFIGS:
        if runtime in args.skip:
            continue
        started = time.perf_counter()
        recognizer = make_recognizer(bundle, runtime, precision, args.threads)
        result = speed(recognizer, clip, args.repeats)
        rows.append({"runtime": label, "load_s": time.perf_counter() - started, **result})
        print(f"{label}: {result['median_x_real_time']:.0f}x real time", flush=True)
    fastest = max(row["median_x_real_time"] for row in rows)
    print("\n| runtime | x real time (median) | best | relative to fastest |\n|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['runtime']} | {row['median_x_real_time']:.0f} | {row['best_x_real_time']:.0f} "
            f"| {row['median_x_real_time'] / fastest:.2f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"model": str(args.model), "threads": args.threads, "clip_s": args.seconds, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
