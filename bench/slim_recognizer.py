"""The slim recognizer (NumPy log-mel, ONNX Runtime, no PyTorch) against the PyTorch recognizer
(eager, fp32), whole requests' model work side by side in one process on one 10 s clip.

    python -m bench.slim_recognizer [--model models/en-whisper-tiny] [--threads 2] [--repeats 15]

Two calls per recognizer, front end included: ``infer`` (the CTC path: partials, greedy and beam)
and ``second_pass`` (the default decoder's model work: CTC log-probs and Whisper's decoder).
Calls alternate between the two sides so that machine noise falls on both; read the ratios
(PyTorch median / slim median; above 1: the slim path is faster).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from app.asr.bundle import load_bundle
from app.asr.slim.recognizer import SlimRecognizer
from app.asr.torch_recognizer import TorchRecognizer
from bench.slim_networks import DATA, side_by_side, speech_clip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/en-whisper-tiny"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clip = speech_clip(Path(os.environ.get("ASR_DATA", DATA)), args.seconds)
    eager = TorchRecognizer(load_bundle(args.model), device="cpu", precision="fp32")
    results = {}
    int8 = SlimRecognizer.load(args.model, precision="int8", num_threads=args.threads)
    slim = SlimRecognizer.load(args.model, num_threads=args.threads)
    results["infer_fp32"] = side_by_side(lambda: eager.infer([clip]), lambda: slim.infer([clip]), args.repeats)
    results["infer_int8"] = side_by_side(lambda: eager.infer([clip]), lambda: int8.infer([clip]), args.repeats)
    results["second_pass_fp32"] = side_by_side(
        lambda: eager.second_pass([clip]), lambda: slim.second_pass([clip]), args.repeats
    )
    print(json.dumps({"clip_seconds": args.seconds, "threads": args.threads, **results}, indent=2))


if __name__ == "__main__":
    main()
