"""The offline ceiling: the same model, runtime and precision on audio already decoded in memory.

Clips are sorted by length and cut into batches within the server's limits (most utterances per
batch, padded audio seconds per batch), so batches are as full and as little padded as they
can be. Several batch sizes and worker layouts are timed and the fastest is the ceiling: on a
CPU, one utterance at a time could beat large padded batches, and one single-threaded worker per
core could beat one worker whose operators use every core. A batch runs as the server runs it
(``--batch-execution``, as ``ASR_BATCH_EXECUTION``: one padded tensor, or on a CPU by default
item by item at each item's length). Each timed batch computes features,
runs the network and greedy-decodes every row (``--decoder attention``: the second pass and its
word alignment instead, on the clips cut into pieces as the engine cuts them); HTTP, container
decoding and scheduling are left out. That is the most this machine can serve.

Batches run on worker threads, as in the server's model runner, in a seeded random order,
repeated, until the time asked for has passed; the rate is the audio of the batches run over
their time. Every batch shape is run once, untimed, before a layout and batch size's first
timing (the server has seen every shape of the workload after its first minute too).

    python -m bench.ceiling --json bench/results/ceiling.json
    python -m bench.ceiling --serve     # load once; measure on each "measure" line of stdin (JSON out)
    python -m bench.ceiling --batch-execution padded --batch-sizes 1 4   # padded batches instead
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.asr.audio import decode_audio
from app.asr.recognizer import Recognizer
from bench import recognizers, report, workload
from bench.our_systems import engine_pieces

DECODERS = ("greedy", "attention")


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


@dataclass(frozen=True)
class Layout:
    """How the model's work spreads over the cores: ``workers`` threads, each with ``threads`` of its own."""

    workers: int
    threads: int

    @property
    def name(self) -> str:
        return f"{self.workers}x{self.threads}"


def layouts(cores: int) -> list[Layout]:
    """One worker using every core, and one single-threaded worker per core (the same if one core)."""
    return sorted({Layout(1, cores), Layout(cores, 1)}, key=lambda layout: layout.workers)


class Ceiling:
    """Loaded recognizers (one per worker layout) and the workload in memory, ready to be timed."""

    def __init__(
        self,
        recognizers_by_layout: dict[Layout, Recognizer],
        audio: list[np.ndarray],
        max_batch_seconds: float,
        decoder: str = "greedy",
    ) -> None:
        self.recognizers = recognizers_by_layout
        first = next(iter(recognizers_by_layout.values()))
        self.decoder = recognizers.greedy_decoder(first)
        self.aligner = recognizers.aligned_decoder(first) if decoder == "attention" else None
        self.audio = audio
        self.lengths = [a.shape[0] for a in audio]
        self.max_batch_samples = int(max_batch_seconds * first.config.sample_rate)
        self.sample_rate = first.config.sample_rate
        self.rng = np.random.default_rng(0)
        self.warmed: set[tuple[Layout, int]] = set()
        # The server calls the recognizer from its model threads; on this machine PyTorch's frontend
        # is several times slower called from the main thread, so the ceiling uses threads too.
        self.pools = {
            layout: ThreadPoolExecutor(max_workers=layout.workers, thread_name_prefix="model")
            for layout in recognizers_by_layout
        }

    def run(self, recognizer: Recognizer, batch: list[int]) -> int:
        """Features, network and greedy decoding of one batch (or the second pass and its word
        alignment); returns its samples."""
        audio = [self.audio[i] for i in batch]
        if self.aligner is not None:
            for output in recognizer.second_pass(audio):
                self.aligner.align(output)
        else:
            for log_probs in recognizer.infer(audio):
                self.decoder.decode(log_probs)
        return sum(self.lengths[i] for i in batch)

    def measure(self, layout: Layout, max_batch_size: int, seconds: float) -> CeilingResult:
        """Warm the shapes up once, then run batches in random order on the layout's workers for ``seconds``."""
        recognizer, pool = self.recognizers[layout], self.pools[layout]
        torch.set_num_threads(layout.threads)  # the frontend's threads, as the server sets them
        batches = length_sorted_batches(self.lengths, max_batch_size, self.max_batch_samples)
        if (layout, max_batch_size) not in self.warmed:
            list(pool.map(lambda batch: self.run(recognizer, batch), batches))
            self.warmed.add((layout, max_batch_size))
        done: list[list[int]] = []
        started = time.perf_counter()
        stop = started + seconds

        def worker(order: list[list[int]]) -> None:
            for batch in order:
                if time.perf_counter() >= stop:
                    return
                self.run(recognizer, batch)
                done.append(batch)

        rounds = max(1, int(seconds * 50))  # far more batches than fit: the clock stops the workers
        orders = [
            [batches[int(i)] for _ in range(rounds) for i in self.rng.permutation(len(batches))]
            for _ in range(layout.workers)
        ]
        list(pool.map(worker, orders))
        elapsed = time.perf_counter() - started
        audio_seconds = sum(self.lengths[i] for b in done for i in b) / self.sample_rate
        return CeilingResult(
            audio_seconds_per_second=audio_seconds / elapsed,
            seconds=elapsed,
            audio_seconds=audio_seconds,
            batches_run=len(done),
            mean_batch_size=sum(len(b) for b in done) / len(done),
            mean_fill=float(np.mean([fill(self.lengths, b) for b in done])),
        )

    def best(self, batch_sizes: list[int], seconds: float) -> dict[str, Any]:
        """Each layout and batch size for ``seconds``; the fastest is the ceiling."""
        results = {
            (layout, size): self.measure(layout, size, seconds) for layout in self.recognizers for size in batch_sizes
        }
        layout, size = max(results, key=lambda key: results[key].audio_seconds_per_second)
        return {
            "audio_seconds_per_second": results[layout, size].audio_seconds_per_second,
            "best_batch_size": size,
            "best_layout": {"workers": layout.workers, "threads": layout.threads},
            "by_layout_and_batch_size": {f"{k[0].name} b{k[1]}": r.__dict__ for k, r in results.items()},
        }


def load(
    model: Path,
    runtime: str,
    precision: str,
    max_batch_seconds: float,
    batch_execution: str = "auto",
    decoder: str = "greedy",
) -> tuple[Ceiling, dict[str, Any]]:
    """A recognizer per worker layout and the decoded workload (for the second pass, cut into the
    engine's pieces), plus what describes them in the results."""
    clips = workload.load()
    by_layout = {
        layout: recognizers.make_recognizer(
            model, runtime, precision, num_threads=layout.threads, batch_execution=batch_execution
        )
        for layout in layouts(os.cpu_count() or 1)
    }
    first = next(iter(by_layout.values()))
    rate = first.config.sample_rate
    audio = [decode_audio(clips.path(c).read_bytes(), rate) for c in clips.clips]
    if decoder == "attention":
        audio = [piece for wave in audio for piece in engine_pieces(wave, rate)]
    about = {
        "benchmark": "ceiling",
        "decoder": decoder,
        "recognizer": recognizers.describe(first),
        "workload": clips.describe(),
        "max_batch_audio_seconds": max_batch_seconds,
    }
    return Ceiling(by_layout, audio, max_batch_seconds, decoder), about


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
    parser.add_argument(
        "--batch-execution", default="auto", choices=["auto", "padded", "per_item"], help="as ASR_BATCH_EXECUTION"
    )
    parser.add_argument("--max-batch-audio-seconds", type=float, default=240.0, help="as ASR_MAX_BATCH_AUDIO_SECONDS")
    parser.add_argument("--decoder", default="greedy", choices=DECODERS, help="greedy CTC or the second pass")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per batch size")
    parser.add_argument("--serve", action="store_true", help="measure on each line of stdin")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    ceiling, about = load(
        args.model, args.runtime, args.precision, args.max_batch_audio_seconds, args.batch_execution, args.decoder
    )
    if args.serve:
        serve(ceiling, about, args.batch_sizes, args.seconds)
        return
    report.print_json({**about, **ceiling.best(args.batch_sizes, args.seconds)}, args.json)


if __name__ == "__main__":
    main()
