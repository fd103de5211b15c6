"""Time of the torch-free front end and forced alignment against their torch counterparts.

    OPENBLAS_NUM_THREADS=1 python -m bench.slim_frontend [--threads 2] [--repeats 20] [--rounds 7]

In one process, with torch limited to ``--threads`` threads, times side by side (alternating,
best of ``--rounds`` rounds of ``--repeats`` calls each):

- the Whisper log-mel of one 10 s and one 30 s clip: ``app.asr.features.WhisperLogMel`` (torch)
  and ``app.asr.slim.frontend.NumpyWhisperLogMel`` (NumPy) on one thread and on ``--threads``;
- the CTC forced alignment of 100 tokens on 500 frames of a 29-token vocabulary:
  ``torchaudio.functional.forced_align`` and ``app.asr.forced_align.forced_align``.

Prints milliseconds per call and the ratio NumPy / torch (below 1: NumPy is faster). The audio
is seeded noise: the work does not depend on what the samples say. Without
``OPENBLAS_NUM_THREADS=1``, NumPy's BLAS starts a thread per core whose spinning slows torch's
threads (and the NumPy pool's) in the same process; on a busy machine the figures swing widely.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np


def best_ms(calls: dict[str, Callable[[], object]], repeats: int, rounds: int) -> dict[str, float]:
    """Best milliseconds per call of each of ``calls``, timed in alternation."""
    best = dict.fromkeys(calls, float("inf"))
    for call in calls.values():
        call()
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(repeats):
                call()
            best[name] = min(best[name], (time.perf_counter() - start) / repeats * 1e3)
    return best


def frontend_calls(seconds: float) -> dict[str, Callable[[], object]]:
    """The torch and NumPy front ends on one clip of ``seconds``."""
    import torch

    from app.asr.configs import WhisperFrontendConfig
    from app.asr.features import WhisperLogMel
    from app.asr.slim.frontend import NumpyWhisperLogMel

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((1, int(16000 * seconds)))).astype(np.float32)
    lengths = np.array([audio.shape[1]], dtype=np.int64)
    torch_frontend = WhisperLogMel(WhisperFrontendConfig())
    one = NumpyWhisperLogMel(WhisperFrontendConfig())
    shared = NumpyWhisperLogMel(WhisperFrontendConfig(), threads=torch.get_num_threads())
    audio_t, lengths_t = torch.from_numpy(audio), torch.from_numpy(lengths)

    def with_torch() -> object:
        with torch.inference_mode():
            return torch_frontend(audio_t, lengths_t)

    return {
        "torch": with_torch,
        "numpy": lambda: one(audio, lengths),
        f"numpy x{shared.threads}": lambda: shared(audio, lengths),
    }


def alignment_calls(frames: int = 500, count: int = 100, vocab: int = 29) -> dict[str, Callable[[], object]]:
    """torchaudio's and the NumPy forced alignment of ``count`` random tokens on ``frames`` frames."""
    import torch
    import torchaudio.functional

    from app.asr.forced_align import forced_align

    rng = np.random.default_rng(0)
    log_probs = torch.log_softmax(torch.from_numpy(3 * rng.standard_normal((frames, vocab)).astype(np.float32)), -1)
    targets = rng.integers(1, vocab, size=count)
    targets_t = torch.from_numpy(targets.astype(np.int32))[None]
    log_probs_np = log_probs.numpy()
    return {
        "torch": lambda: torchaudio.functional.forced_align(log_probs[None], targets_t, blank=0),
        "numpy": lambda: forced_align(log_probs_np, targets, 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch's intra-op threads")
    parser.add_argument("--repeats", type=int, default=20, help="calls per timing")
    parser.add_argument("--rounds", type=int, default=7, help="timings per variant; the best is kept")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    cases = {
        "log-mel, 10 s clip": frontend_calls(10.0),
        "log-mel, 30 s clip": frontend_calls(30.0),
        "forced alignment, 500 frames x 100 tokens": alignment_calls(),
    }
    print(f"torch threads: {args.threads}; ms per call, best of {args.rounds} x {args.repeats}")
    for name, calls in cases.items():
        ms = best_ms(calls, args.repeats, args.rounds)
        print(f"{name}: torch {ms['torch']:.2f}")
        for variant in [v for v in ms if v != "torch"]:
            print(f"    {variant:10s} {ms[variant]:7.2f}  ratio {ms[variant] / ms['torch']:.2f}")


if __name__ == "__main__":
    main()
