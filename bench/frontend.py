"""Time of the log-mel frontend per clip: its power spectrum two ways, with and without the allocator tuning.

    python -m bench.frontend [--seconds 17] [--rounds 4] [--repeats 40]

Each round starts two child processes in turn, one with glibc's default allocator and one with
``app.process.tune_malloc`` (the server's default, ``ASR_TUNE_MALLOC``). Inside each,
two single-threaded workers alternate computing the features of one clip with torchaudio's
``MelSpectrogram`` (power as ``|X|`` squared) and with ``LogMelFrontend`` (power as re² + im²),
as the server's model threads do. Prints milliseconds per clip (median over rounds) and writes
bench/results/frontend.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VARIANTS = ("torchaudio, abs squared", "re² + im²")


def child(seconds: float, repeats: int, tuned: bool) -> dict[str, float]:
    """Milliseconds per clip of each variant, in this process."""
    import torch

    from app.asr.configs import FrontendConfig, default_config
    from app.asr.features import LogMelFrontend
    from app.process import tune_malloc

    torch.set_num_threads(1)
    if tuned:
        tune_malloc()
    config = default_config().frontend
    assert isinstance(config, FrontendConfig)  # the default bundle has the log-mel frontend
    frontend = LogMelFrontend(config).eval()
    audio = 0.1 * torch.randn(1, int(seconds * 16000), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([audio.shape[1]])

    def torchaudio_power() -> None:
        mel = frontend.mel(audio)
        _ = (torch.log(mel + frontend.config.log_offset) - frontend.mean) / frontend.std

    def ours() -> None:
        frontend(audio, lengths)

    def time_it(fn: Callable[[], None]) -> float:
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - started) / repeats * 1000

    result: dict[str, float] = {}
    with torch.inference_mode(), ThreadPoolExecutor(max_workers=2) as pool:  # the model threads' place
        for name, fn in zip(VARIANTS, (torchaudio_power, ours), strict=True):
            pool.submit(fn).result()
            result[name] = statistics.mean(pool.map(time_it, [fn, fn]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=17.0, help="clip length (the workload's mean is 17 s)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--child", choices=["default", "tuned"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("bench/results/frontend.json"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.seconds, args.repeats, args.child == "tuned")))
        return
    runs: dict[str, list[dict[str, float]]] = {"default": [], "tuned": []}
    for round_ in range(args.rounds):
        for allocator in ("default", "tuned") if round_ % 2 == 0 else ("tuned", "default"):
            command = [sys.executable, "-m", "bench.frontend", "--child", allocator]
            command += ["--seconds", str(args.seconds), "--repeats", str(args.repeats)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs[allocator].append(json.loads(out.strip().splitlines()[-1]))
    table = {
        allocator: {v: statistics.median(r[v] for r in rows) for v in VARIANTS} for allocator, rows in runs.items()
    }
    print(f"\nms per {args.seconds:g} s clip, median of {args.rounds} rounds (two threads, one each)\n")
    print("| allocator | " + " | ".join(VARIANTS) + " |\n|---|" + "---|" * len(VARIANTS))
    for allocator, row in table.items():
        print(f"| {allocator} | " + " | ".join(f"{row[v]:.2f}" for v in VARIANTS) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seconds": args.seconds, "rounds": runs, "median_ms": table}, indent=1))


if __name__ == "__main__":
    main()
