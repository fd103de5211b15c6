"""The slim recognizer (NumPy log-mel, ONNX Runtime, no PyTorch) against the PyTorch recognizer
(eager, fp32): a request's model work on one 10 s clip, each side in its own process.

    python -m bench.slim_recognizer [--model models/en-whisper-tiny] [--threads 2] [--rounds 3] [--calls 20]

Two calls per recognizer, front end included: ``infer`` (the CTC path: partials, greedy and beam)
and ``second_pass`` (the default decoder's model work: CTC log-probs and Whisper's decoder).
Each side runs alone in a fresh process, as a server runs one of them (the slim one with PyTorch
unimportable, as in the slim install): two runtimes' thread pools in one process slow each other
(PyTorch's threads spin for a while after its last operator). Processes alternate, ``--rounds``
times each; read the ratios of the medians and of the fastest calls (PyTorch time / slim time;
above 1: the slim path is faster). On a shared machine the fastest calls are the steadier figure.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CALLS = ("infer", "second_pass")
DATA = Path(os.environ.get("ASR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def speech_clip(data: Path, seconds: float, rate: int = 16000) -> np.ndarray:
    """cv100 utterances joined and cut to ``seconds``."""
    from train.data.audio_io import read_audio

    rows = [json.loads(line) for line in (data / "cv100" / "manifest.jsonl").read_text().splitlines()]
    pieces, total = [], 0
    for row in rows:
        pieces.append(read_audio(data / "cv100" / row["audio"]))
        total += pieces[-1].size
        if total >= seconds * rate:
            break
    return np.concatenate(pieces)[: int(seconds * rate)]


def compare(torch: list[float], slim: list[float]) -> dict[str, float]:
    """Medians and fastest of two sides' times, and PyTorch's over the slim path's (above 1: slim is faster)."""
    return {
        "torch_median_s": round(statistics.median(torch), 4),
        "slim_median_s": round(statistics.median(slim), 4),
        "torch_over_slim_median": round(statistics.median(torch) / statistics.median(slim), 3),
        "torch_fastest_s": round(min(torch), 4),
        "slim_fastest_s": round(min(slim), 4),
        "torch_over_slim_fastest": round(min(torch) / min(slim), 3),
    }


def timed(call: Callable[[], object], calls: int) -> list[float]:
    """Seconds of ``calls`` calls after two warm-up calls."""
    call(), call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def run_side(
    side: str, model: Path, threads: int, calls: int, seconds: float, spin_wait: bool = False
) -> dict[str, list[float]]:
    """In this process: one recognizer (``torch`` or ``slim`` fp32 or ``slim-int8``) timed on the clip."""
    clip = speech_clip(DATA, seconds)
    if side == "torch":
        import torch

        from app.asr.bundle import load_bundle
        from app.asr.torch_recognizer import TorchRecognizer

        torch.set_num_threads(threads)
        recognizer: Any = TorchRecognizer(load_bundle(model), device="cpu", precision="fp32")
    else:
        from app.asr.slim.recognizer import SlimRecognizer

        precision = "int8" if side == "slim-int8" else "fp32"
        recognizer = SlimRecognizer.load(model, precision=precision, num_threads=threads, spin_wait=spin_wait)
    names = CALLS if side != "slim-int8" else ("infer",)
    return {name: timed(functools.partial(getattr(recognizer, name), [clip]), calls) for name in names}


def in_process(side: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Run one side in a fresh interpreter (the slim ones with PyTorch unimportable)."""
    block = "import sys; sys.modules['torch'] = sys.modules['torchaudio'] = None; " if side != "torch" else ""
    call = (
        f"run_side({side!r}, Path({str(args.model)!r}), {args.threads}, {args.calls}, {args.seconds}, {args.spin_wait})"
    )
    imports = "import json; from pathlib import Path; from bench.slim_recognizer import run_side"
    code = f"{block}{imports}; print(json.dumps({call}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/en-whisper-tiny"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="processes per side, alternating")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per process and call kind")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--spin-wait", action="store_true", help="the slim side's threads spin (ASR_SPIN_WAIT)")
    args = parser.parse_args(argv)
    times: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for side in ("torch", "slim", "slim-int8"):
            for name, values in in_process(side, args).items():
                times.setdefault(side, {}).setdefault(name, []).extend(values)
    results: dict[str, Any] = {
        "clip_seconds": args.seconds,
        "threads": args.threads,
        "spin_wait": args.spin_wait,
        "rounds": args.rounds,
    }
    for side, name in (("slim", "infer"), ("slim-int8", "infer"), ("slim", "second_pass")):
        results[f"{name}_{side}"] = compare(times["torch"][name], times[side][name])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
