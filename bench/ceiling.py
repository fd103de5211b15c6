"""The offline ceiling: the same model, runtime and precision on audio already decoded in memory.

Clips are sorted by length and cut into batches within the server's limits (most utterances per
batch, padded audio seconds per batch), so batches are as full and as little padded as they
can be. Several batch sizes are timed and the fastest is the ceiling (on a CPU, one utterance
at a time could beat large padded batches). Each timed batch computes features, runs the network
and greedy-decodes every row; HTTP, container decoding and scheduling are left out. That is the
most this machine can serve.

Batches run on one worker thread, as in the server's model runner, in a seeded random order,
repeated, until the time asked for has passed; the rate is the audio of the batches run over
their time. Every batch shape is run once, untimed, before a batch size's first timing (the
server has seen every shape of the workload after its first minute too).

    python -m bench.ceiling --json bench/results/ceiling.json
    python -m bench.ceiling --serve     # load once; measure on each "measure" line of stdin (JSON out)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.asr.audio import decode_audio
from app.asr.recognizer import Recognizer
from bench import recognizers, workload


@dataclass(frozen=True)
class CeilingResult:
    """Audio seconds per wall second at one batch size."""

    audio_seconds_per_second: float
    seconds: float
    audio_seconds: float
    batches_run: int
    mean_batch_size: float
    mean_fill: float


def length_sorted_batches(lengths: list[int], max_batch_size: int, max_batch_samples: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches, shortest first, within both limits."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        padded = lengths[index] * (len(current) + 1)  # sorted: this one is the longest so far
        if current and (len(current) >= max_batch_size or padded > max_batch_samples):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def fill(lengths: list[int], batch: list[int]) -> float:
    """Real over padded samples of one batch."""
    return sum(lengths[i] for i in batch) / (max(lengths[i] for i in batch) * len(batch))


class Ceiling:
    """A loaded recognizer and the workload in memory, ready to be timed."""

    def __init__(self, recognizer: Recognizer, audio: list[np.ndarray], max_batch_seconds: float) -> None:
        self.recognizer = recognizer
        self.decoder = recognizers.greedy_decoder(recognizer)
        self.audio = audio
        self.lengths = [a.shape[0] for a in audio]
        self.max_batch_samples = int(max_batch_seconds * recognizer.config.sample_rate)
        self.rng = np.random.default_rng(0)
        self.warmed: set[int] = set()
        # The server calls the recognizer from its model thread; on this machine PyTorch's frontend
        # is several times slower called from the main thread, so the ceiling uses a thread too.
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    def run(self, batch: list[int]) -> None:
        """Features, network and greedy decoding of one batch."""
        for log_probs in self.recognizer.infer([self.audio[i] for i in batch]):
            self.decoder.decode(log_probs)

    def measure(self, max_batch_size: int, seconds: float) -> CeilingResult:
        """On the model thread: warm the shapes up once, then run batches in random order for ``seconds``."""
        return self.thread.submit(self._measure, max_batch_size, seconds).result()

    def _measure(self, max_batch_size: int, seconds: float) -> CeilingResult:
        batches = length_sorted_batches(self.lengths, max_batch_size, self.max_batch_samples)
        if max_batch_size not in self.warmed:
            for batch in batches:
                self.run(batch)
            self.warmed.add(max_batch_size)
        done: list[list[int]] = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            for index in self.rng.permutation(len(batches)):
                done.append(batches[int(index)])
                self.run(done[-1])
                if time.perf_counter() - started >= seconds:
                    break
        elapsed = time.perf_counter() - started
        audio_seconds = sum(self.lengths[i] for b in done for i in b) / self.recognizer.config.sample_rate
        return CeilingResult(
            audio_seconds_per_second=audio_seconds / elapsed,
            seconds=elapsed,
            audio_seconds=audio_seconds,
            batches_run=len(done),
            mean_batch_size=sum(len(b) for b in done) / len(done),
            mean_fill=float(np.mean([fill(self.lengths, b) for b in done])),
        )

    def best(self, batch_sizes: list[int], seconds: float) -> dict[str, Any]:
        """Each batch size for ``seconds``; the fastest is the ceiling."""
        by_size = {size: self.measure(size, seconds) for size in batch_sizes}
        best = max(by_size, key=lambda size: by_size[size].audio_seconds_per_second)
        return {
            "audio_seconds_per_second": by_size[best].audio_seconds_per_second,
            "best_batch_size": best,
            "by_batch_size": {str(size): result.__dict__ for size, result in by_size.items()},
        }


def load(model: Path, runtime: str, precision: str, max_batch_seconds: float) -> tuple[Ceiling, dict[str, Any]]:
    """The recognizer and the decoded workload, plus what describes them in the results."""
    clips = workload.load()
    recognizer = recognizers.make_recognizer(model, runtime, precision)
    rate = recognizer.config.sample_rate
    audio = [decode_audio(clips.path(c).read_bytes(), rate) for c in clips.clips]
    about = {
        "benchmark": "ceiling",
        "recognizer": recognizers.describe(recognizer),
        "workload": clips.describe(),
        "max_batch_audio_seconds": max_batch_seconds,
    }
    return Ceiling(recognizer, audio, max_batch_seconds), about


def serve(ceiling: Ceiling, about: dict[str, Any], batch_sizes: list[int], seconds: float) -> None:
    """Answer each ``measure`` line on stdin with one JSON line; stop at EOF or ``quit``."""
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            return
        print(json.dumps({**about, **ceiling.best(batch_sizes, seconds)}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=recognizers.DEFAULT_MODEL)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16], help="the fastest one counts")
    parser.add_argument("--max-batch-audio-seconds", type=float, default=240.0, help="as ASR_MAX_BATCH_AUDIO_SECONDS")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per batch size")
    parser.add_argument("--serve", action="store_true", help="measure on each line of stdin")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    ceiling, about = load(args.model, args.runtime, args.precision, args.max_batch_audio_seconds)
    if args.serve:
        serve(ceiling, about, args.batch_sizes, args.seconds)
        return
    text = json.dumps({**about, **ceiling.best(args.batch_sizes, args.seconds)}, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
